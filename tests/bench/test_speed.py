"""The speed benchmark in CI size: one step of everything, every projector, the files it writes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlamaForCausalLM

from llava.bench import report, speed
from llava.bench.__main__ import build_parser, main
from llava.bench.machine import Clock, PeakMemory
from llava.bench.presets import BASELINE, PRESETS, Setting, get_preset
from llava.bench.profile import compare_loss_paths, compare_ttft, profile_parts
from llava.model import LlavaConfig
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_projector.builder import build_vision_projector

TINY_LABELS = ["mlp2x_gelu@144", "avgpool@36", "delta@36", "delta@16", "delta@9"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The CI-sized benchmark, through the command line, once for the module."""
    out = tmp_path_factory.mktemp("bench_tiny")
    assert main(["--preset", "tiny", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_tiny_run_writes_json_markdown_and_chart(tiny_run):
    out, data = tiny_run
    assert (out / "results.md").is_file()
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["preset"] == "tiny"
    assert "random" in data["weights"].lower()
    for key in ("cpu", "cpu_cores", "ram_gib", "device", "name"):
        assert data["machine"][key]
    assert data["versions"]["torch"] == torch.__version__ and data["versions"]["transformers"]
    assert data["settings"]["grid"] == "12x12"
    assert len(data["load_average"]["start"]) == 3
    md = (out / "results.md").read_text()
    for label in TINY_LABELS:
        assert f"`{label}`" in md
    assert "![speed-ups](chart.png)" in md


def test_tiny_run_has_every_setting_and_measurement(tiny_run):
    _, data = tiny_run
    results = data["results"]
    # 12 x 12 grid: mlp2x_gelu keeps 144, avgpool/delta s=2 -> 36, delta s=3 -> 16, s=4 -> 9.
    assert [r["label"] for r in results] == TINY_LABELS
    assert [r["visual_tokens"] for r in results] == [144, 36, 36, 16, 9]
    assert data["baseline"] == "mlp2x_gelu@144"
    for res in results:
        assert set(res["inference"]) == {"1", "2"}
        for batch, inf in res["inference"].items():
            for key in ("ttft_s", "short_latency_s", "long_latency_s", "tower_s", "projector_s", "peak_memory_mib"):
                assert inf[key] > 0, (res["label"], batch, key)
            assert inf["short_throughput"] == pytest.approx(int(batch) / inf["short_latency_s"])
            assert inf["decode_tokens_per_s"] > 0
            assert 0 < inf["projector_share"] < 1
        for stage in ("stage1", "stage2"):
            tr = res["training"][stage]
            assert tr["samples_per_s"] > 0 and tr["peak_memory_mib"] > 0
            text = 4 if stage == "stage1" else 8  # tiny preset: caption_tokens, text_tokens
            assert tr["sequence_tokens"] == text + 1 + res["visual_tokens"]
        assert res["training"]["stage2"]["mode"] == "full"  # fits easily on a CPU
        assert res["training"]["stage1"]["trainable_params"] == res["params"]["projector"]
        assert res["training"]["stage2"]["trainable_params"] == res["params"]["llm"] + res["params"]["projector"]
    for metric in ("ttft", "short_throughput", "long_throughput", "decode"):
        assert data["ratios"]["mlp2x_gelu@144"][metric] == {"1": 1.0, "2": 1.0}
    assert data["ratios"]["mlp2x_gelu@144"]["stage1"] == 1.0
    assert data["targets"] == []  # the tiny preset has none


def test_report_rebuilds_from_json(tiny_run, tmp_path):
    out, data = tiny_run
    (tmp_path / "results.json").write_text((out / "results.json").read_text())
    (tmp_path / "chart.png").write_bytes(b"an earlier run's chart")
    report.main([str(tmp_path), "--no-chart"])
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# Speed: projectors side by side")
    # without a chart of these results, none is linked, and an earlier run's goes
    assert "chart.png" not in text and not (tmp_path / "chart.png").exists()


def test_report_memory_table_switches_to_gib_from_10_gib(tiny_run):
    _, data = tiny_run
    data = json.loads(json.dumps(data))
    base = data["results"][0]
    base["inference"]["1"]["peak_memory_mib"] = 2048.0
    base["inference"]["2"]["peak_memory_mib"] = 10240.0
    base["training"]["stage1"]["peak_memory_mib"] = 20480.0
    memory = report.markdown(data).split("## Peak memory", 1)[1]
    row = next(line for line in memory.splitlines() if line.startswith("| `mlp2x_gelu@144` |"))
    assert row.startswith("| `mlp2x_gelu@144` | 2048 MiB | 10.0 GiB | 20.0 GiB | ")


def test_7b_code_path_in_bf16_with_lora_at_tiny_size():
    """What the 7b preset does differently -- bf16 weights, LoRA stage 2 -- on CPU at tiny sizes."""
    preset = get_preset("tiny").replace(stage2="lora", batch_sizes=(2,),
                                        settings=(Setting("mlp2x_gelu", 1), Setting("delta", 2)))
    data = speed.run(preset, dtype="bfloat16")
    json.dumps(data)  # serialisable as is
    assert data["settings"]["dtype"] == "bfloat16"
    assert [r["label"] for r in data["results"]] == ["mlp2x_gelu@144", "delta@36"]
    for res in data["results"]:
        s2 = res["training"]["stage2"]
        assert s2["mode"] == "lora" and "LoRA r=4" in s2["trainable"]
        assert res["params"]["projector"] < s2["trainable_params"] < res["params"]["llm"]
        assert s2["samples_per_s"] > 0
    md = report.markdown(data)
    assert "| `delta@36` |" in md and "lora" in md


def test_isolated_settings_run_in_fresh_processes():
    preset = get_preset("tiny").replace(isolate=True, batch_sizes=(1,),
                                        settings=(Setting("mlp2x_gelu", 1), Setting("delta", 4)))
    data = speed.run(preset, training=False)
    assert [r["visual_tokens"] for r in data["results"]] == [144, 9]
    pids = {r["process"] for r in data["results"]}
    assert len(pids) == 2 and os.getpid() not in pids
    assert "fresh process" in data["memory"]
    assert data["results"][1]["inference"]["1"]["ttft_s"] > 0


def test_7b_preset_has_llava15_7b_shapes():
    preset = get_preset("7b")
    assert (preset.device, preset.dtype, preset.grid_side) == ("cuda", "bfloat16", 24)
    assert [(s.projector, s.scale_factor) for s in preset.settings] == [
        ("mlp2x_gelu", 1), ("avgpool", 2), ("delta", 2), ("delta", 3), ("delta", 4)]
    assert preset.settings[0] == BASELINE
    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(**preset.llm))
        tower = CLIPVisionConfig(**preset.tower)
        from transformers import CLIPVisionModel

        clip = CLIPVisionModel(tower)
    assert sum(p.numel() for p in llm.parameters()) == 6_738_415_616  # Vicuna-7B / Llama-2-7B
    assert sum(p.numel() for p in clip.parameters()) == 303_507_456  # CLIP ViT-L/14-336 vision model
    for setting, tokens, params in [(Setting("mlp2x_gelu", 1), 576, 20_979_712), (Setting("delta", 2), 144, 42_503_680),
                                    (Setting("delta", 3), 64, None), (Setting("delta", 4), 36, None),
                                    (Setting("avgpool", 2), 144, 20_979_712)]:
        config = LlavaConfig(**preset.llm, mm_hidden_size=1024, mm_projector_type=setting.projector,
                             scale_factor=setting.scale_factor, mm_delta_layers=preset.delta_layers)
        with torch.device("meta"):
            projector = build_vision_projector(config)
        assert projector.num_tokens((24, 24)) == tokens
        if params is not None:
            assert sum(p.numel() for p in projector.parameters()) == params


def test_cpu_preset_tower_keeps_the_reference_layer_positions(tmp_path):
    preset = get_preset("cpu")
    tower_dir = speed.write_tower_folder(tmp_path, preset.tower)
    config = speed.llava_config(preset, Setting("delta", 2), tower_dir)
    tower = CLIPVisionTower(tower_dir, select_layer=config.mm_vision_select_layer, extra_layers=(6, 8, 10, 11),
                            delay_load=True)
    assert preset.grid_side == 24 and tower.num_patches == 576
    # 12, 16, 22, 23 of 24 layers -> 6, 8, 10, 11 of 12: the last level is the select layer (-2).
    assert tower.select_layer == 11 == tower.layers_needed
    assert config.mm_delta_layers == "6,8,10,11"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without CUDA")
def test_7b_preset_without_cuda_says_so(capsys, tmp_path):
    with pytest.raises(RuntimeError, match=r"device cuda \(from preset '7b'\) needs CUDA"):
        speed.run(get_preset("7b"))
    # the command line says so first, before waiting for a quiet machine or measuring anything
    with pytest.raises(SystemExit) as exit_info:
        main(["--preset", "7b", "--out", str(tmp_path), "--no-chart", "--wait-for-load", "0.5",
              "--wait-max-min", "30"])
    assert exit_info.value.code == 2
    assert "--device cuda (preset 7b) needs CUDA, but torch.cuda.is_available() is False" in capsys.readouterr().err


def test_targets_and_ratios_from_results():
    def fake(label, projector, scale, ttft, short, s1, s2, share):
        inf = {"ttft_s": ttft, "short_throughput": short, "long_throughput": short, "decode_tokens_per_s": 10.0,
               "projector_share": share, "peak_memory_mib": 100.0}
        return {"label": label, "projector": projector, "scale_factor": scale, "inference": {"16": inf},
                "training": {"stage1": {"samples_per_s": s1, "peak_memory_mib": 10.0},
                             "stage2": {"samples_per_s": s2, "peak_memory_mib": 10.0}}}

    results = [fake("mlp2x_gelu@576", "mlp2x_gelu", 1, 1.0, 10.0, 1.0, 1.0, 0.01),
               fake("delta@144", "delta", 2, 0.3, 17.0, 5.0, 1.4, 0.02)]
    ratios = speed.compute_ratios(results)
    assert ratios["delta@144"]["ttft"]["16"] == pytest.approx(1 / 0.3)
    assert ratios["delta@144"]["short_throughput"]["16"] == pytest.approx(1.7)
    assert ratios["delta@144"]["long_throughput"]["16"] == pytest.approx(1.7)
    assert ratios["delta@144"]["decode"]["16"] == 1.0
    assert (ratios["delta@144"]["stage1"], ratios["delta@144"]["stage2"]) == pytest.approx((5.0, 1.4))
    rows = {r["metric"]: r for r in speed.evaluate_targets("7b", results, ratios)}
    assert rows["short_throughput"]["met"] and rows["ttft"]["met"] and rows["stage1"]["met"]
    assert not rows["stage2"]["met"]  # 1.4x < 1.5x
    assert rows["projector_share"]["met"] and rows["projector_share"]["value"] == 0.02
    assert speed.evaluate_targets("tiny", results, ratios) == []
    # delta @ s=2 as the baseline has nothing to be measured against
    assert speed.evaluate_targets("7b", results[::-1], speed.compute_ratios(results[::-1])) == []
    # peak memory: a fraction of the baseline's
    results[1]["inference"]["16"]["peak_memory_mib"] = 25.0
    assert speed.compute_ratios(results)["delta@144"]["peak_memory"] == {"inference_b16": 0.25, "stage1": 1.0,
                                                                         "stage2": 1.0}


def test_stage2_mode_choice():
    preset = get_preset("tiny")
    assert speed.choose_stage2_mode(preset.replace(stage2="lora"), None, torch.device("cpu"))[0] == "lora"
    assert speed.choose_stage2_mode(preset.replace(stage2="auto"), None, torch.device("cpu"))[0] == "full"
    with pytest.raises(ValueError, match="stage2"):
        speed.choose_stage2_mode(preset.replace(stage2="half"), None, torch.device("cpu"))


def test_command_line_overrides():
    args = build_parser().parse_args(["--preset", "cpu", "--out", "x", "--settings", "mlp2x_gelu,delta:3",
                                      "--batch-sizes", "1,4", "--stage2", "lora"])
    assert args.settings == (Setting("mlp2x_gelu", 1), Setting("delta", 3))
    assert args.batch_sizes == (1, 4)
    assert set(PRESETS) == {"tiny", "cpu", "7b"}
    with pytest.raises(ValueError, match="known"):
        get_preset("13b")


@pytest.mark.parametrize("flags, message", [
    (["--settings", "mlp2x_gelu:1,foo:2"], "Unknown mm_projector_type 'foo'"),
    (["--settings", "delta:0"], "--settings item 'delta:0': the scale factor must be a positive integer"),
    (["--settings", "delta:5"], "setting delta:5: the scale factor must divide the 12 x 12 grid of preset 'tiny'"),
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--train-steps", "0"], "--train-steps must be at least 1, got 0"),
    (["--batch-sizes", "0,2"], "--batch-sizes must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--wait-for-load", "0"], "--wait-for-load must be above 0 (a load average is never below 0), got 0.0"),
    (["--wait-for-load", "-1"], "--wait-for-load must be above 0 (a load average is never below 0), got -1.0"),
    (["--wait-for-load", "1", "--wait-max-min", "-5"], "--wait-max-min must be at least 0, got -5.0"),
])
def test_bad_benchmark_flags_stop_before_anything_is_measured(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--out", str(tmp_path / "out"), *flags])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--compare-ttft", "--compare-training", "stage1"], "argument --compare-training: not allowed with argument "
                                                         "--compare-ttft"),
    (["--compare-ttft", "--repeats", "0"], "--repeats and --batch must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device cuda needs CUDA")]))
def test_bad_profile_flags_are_named(capsys, flags, message):
    from llava.bench.profile import main as profile_main

    with pytest.raises(SystemExit):
        profile_main(["--preset", "tiny", *flags])
    assert message in capsys.readouterr().err


def test_profile_runs_at_tiny_size(capsys):
    times = profile_parts(get_preset("tiny"), Setting("delta", 2), batch=1, device=torch.device("cpu"),
                          dtype=torch.float32, repeats=1, components=("tower", "projector"), rows=5)
    assert times["tower"] > 0 and times["projector"] > 0
    assert "== projector" in capsys.readouterr().out


@pytest.mark.parametrize("stage", ["stage1", "full"])
def test_compare_loss_paths_runs_at_tiny_size(stage, capsys):
    result = compare_loss_paths(get_preset("tiny"), Setting("mlp2x_gelu", 1), stage, torch.device("cpu"),
                                torch.float32, repeats=1)
    preset = get_preset("tiny")
    # Stage 1 trains on captions (all labelled), stage 2 on chats (last two thirds labelled).
    labelled = preset.caption_tokens if stage == "stage1" else preset.text_tokens - preset.text_tokens // 3
    assert result["labelled_rows"] == preset.train_batch * labelled
    assert result["full_logits_s"] > 0 and result["labelled_rows_s"] > 0
    assert "labelled rows only" in capsys.readouterr().out


def test_compare_ttft_runs_round_robin_at_tiny_size(capsys):
    preset = get_preset("tiny")
    result = compare_ttft(preset, preset.settings[:3], batch=1, device=torch.device("cpu"), dtype=torch.float32,
                          repeats=2)
    assert list(result) == ["mlp2x_gelu@144", "avgpool@36", "delta@36"]
    for entry in result.values():
        assert len(entry["runs_s"]) == 2 and entry["ttft_s"] > 0
    assert result["mlp2x_gelu@144"]["speedup"] == 1.0
    assert "round" in capsys.readouterr().out


def _recipe_value(script: str, flag: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "scripts" / "v1_5" / script).read_text()
    match = re.search(rf"--{flag}\s+(\S+)", text)
    assert match, f"{script} has no --{flag}"
    return match.group(1)


def test_7b_preset_trains_with_the_recipes_batch_sizes():
    preset = get_preset("7b")
    assert preset.batch("stage1") == int(_recipe_value("pretrain.sh", "per_device_train_batch_size"))  # 32
    for stage in ("full", "lora"):
        assert preset.batch(stage) == int(_recipe_value("finetune.sh", "per_device_train_batch_size"))  # 16
    assert _recipe_value("pretrain.sh", "gradient_checkpointing") == "True"
    assert preset.gradient_checkpointing == "on"  # as the recipes


def test_stage1_batch_and_auto_checkpointing_at_tiny_size():
    preset = get_preset("tiny").replace(stage1_batch=3, train_batch=2, gradient_checkpointing="auto",
                                        settings=(Setting("mlp2x_gelu", 1), Setting("delta", 2)))
    data = speed.run(preset, inference=False)
    for res in data["results"]:
        s1, s2 = res["training"]["stage1"], res["training"]["stage2"]
        assert (s1["batch"], s2["batch"]) == (3, 2)
        assert s1["samples_per_s"] == pytest.approx(3 / s1["step_s"])
        for tr in (s1, s2):  # auto on a CPU: off, host memory
            assert tr["gradient_checkpointing"] is False and tr["checkpointing_reason"].startswith("auto")
    md = report.markdown(data)
    assert "training batch 3 (stage 1) / 2 (stage 2)" in md and "gradient checkpointing auto" in md
    assert "| off / off |" in md
    assert "`delta@36` stage 1: auto: off (host memory)" in md
    on = speed.run(preset.replace(gradient_checkpointing="on", settings=preset.settings[:1]), inference=False)
    assert on["results"][0]["training"]["stage1"]["gradient_checkpointing"] is True
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        preset.replace(gradient_checkpointing=True)


def test_auto_checkpointing_retries_with_it_on_after_running_out_of_memory(monkeypatch):
    """On CUDA, auto first tries without checkpointing; a step that runs out of device memory is
    measured again with checkpointing on, and the result says so."""
    preset = get_preset("tiny").replace(gradient_checkpointing="auto")
    assert [c for c, _ in speed._checkpointing_plan(preset, torch.device("cuda"))] == [False, True]
    assert [c for c, _ in speed._checkpointing_plan(preset, torch.device("cpu"))] == [False]
    # The CUDA plan, on this CPU:
    monkeypatch.setattr(speed, "_checkpointing_plan", lambda p, d: [(False, "auto: off"), (True, "auto: on after OOM")])
    real_steps, tried = speed._timed_steps, []

    def steps(model, params, batch, lr, checkpointing, *args):
        tried.append(checkpointing)
        if not checkpointing:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_steps(model, params, batch, lr, checkpointing, *args)

    monkeypatch.setattr(speed, "_timed_steps", steps)
    with tempfile.TemporaryDirectory() as tower_dir:
        speed.write_tower_folder(tower_dir, preset.tower)
        config = speed.llava_config(preset, Setting("delta", 2), tower_dir)
        model = speed.build_model(config, torch.device("cpu"), torch.float32, "sdpa")
        clock, memory = Clock(torch.device("cpu")), PeakMemory(torch.device("cpu"))
        _, result = speed.measure_training(model, preset, "stage1", 1e-3, torch.device("cpu"), torch.float32,
                                           clock, memory)
    assert tried == [False, True]
    assert result["gradient_checkpointing"] is True and result["checkpointing_reason"] == "auto: on after OOM"
    assert result["samples_per_s"] > 0


def test_checkpointing_flags_on_the_command_line(tmp_path):
    args = build_parser().parse_args(["--out", "x", "--gradient-checkpointing", "auto", "--stage1-batch", "5"])
    assert (args.gradient_checkpointing, args.stage1_batch) == ("auto", 5)
    with pytest.raises(SystemExit, match="contradicts"):
        main(["--preset", "tiny", "--out", str(tmp_path), "--no-gradient-checkpointing",
              "--gradient-checkpointing", "on"])
    assert report._checkpointing_text(True) == "on"  # results written before the modes: a bool
    assert report._train_batches({"train_batch": 4}) == "4"


def test_profile_compare_ttft_takes_settings_on_the_command_line(capsys):
    from llava.bench.profile import main as profile_main

    profile_main(["--preset", "tiny", "--compare-ttft", "--repeats", "1", "--settings", "mlp2x_gelu,delta:3"])
    out = capsys.readouterr().out
    assert "mlp2x_gelu@144" in out and "delta@16" in out and "avgpool" not in out


@pytest.mark.parametrize("stage", ["stage1", "full", "lora"])
def test_compare_training_runs_round_robin_at_tiny_size(stage, capsys):
    from llava.bench.profile import compare_training

    preset = get_preset("tiny")
    result = compare_training(preset, [Setting("mlp2x_gelu", 1), Setting("delta", 2)], stage, torch.device("cpu"),
                              torch.float32, repeats=2)
    assert list(result) == ["mlp2x_gelu@144", "delta@36"]
    for entry in result.values():
        assert len(entry["runs_s"]) == 2 and entry["step_s"] > 0
        assert entry["samples_per_s"] == pytest.approx(preset.batch(stage) / entry["step_s"])
    # Same text in both batches: the sequences differ by the visual tokens only.
    assert result["mlp2x_gelu@144"]["sequence_tokens"] - result["delta@36"]["sequence_tokens"] == 144 - 36
    assert result["mlp2x_gelu@144"]["speedup"] == 1.0
    assert f"{stage} training step" in capsys.readouterr().out


def test_profile_comparison_writes_json_with_the_machine(tmp_path, capsys):
    from llava.bench.profile import main as profile_main

    out = tmp_path / "rr" / "stage1.json"
    profile_main(["--preset", "tiny", "--compare-training", "stage1", "--repeats", "1", "--settings",
                  "mlp2x_gelu,delta:3", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["command"].endswith(f"--json {out}") and record["preset"] == "tiny"
    assert record["machine"]["cpu_cores"] > 0 and record["versions"]["torch"] == torch.__version__
    assert list(record["result"]) == ["mlp2x_gelu@144", "delta@16"]
    assert record["result"]["delta@16"]["samples_per_s"] > 0
    with pytest.raises(SystemExit):
        profile_main(["--preset", "tiny", "--json", str(out)])
    assert "--json needs one of the --compare-* modes" in capsys.readouterr().err
