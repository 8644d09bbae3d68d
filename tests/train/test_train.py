"""End to end on CPU with tiny models: stage 1 -> stage 2 -> load_pretrained_model -> generate,
LoRA / QLoRA, learning-rate groups, resuming a killed stage-1 run, and bad input through train()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM, TrainerCallback

from llava.mm_utils import tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM
from llava.model.builder import load_pretrained_model
from llava.data.dataset import SampleTooLongError
from llava.train.train import train
from tests.conftest import released_projector_state
from tests.train.conftest import common_args, config_only_llm, make_base_llm, write_json

PROMPTS = {"v1": "USER: <image>\nWhat color is the object? ASSISTANT:",
           "chatml": "<|im_start|>user\n<image>\nWhat color is the object?<|im_end|>\n<|im_start|>assistant\n"}


class ProjectorAtStart(TrainerCallback):
    """Records the projector weights when training begins."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        llava = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.weights = {k: v.detach().clone() for k, v in llava.get_model().mm_projector.state_dict().items()}


class SimulatedKill(Exception):
    pass


class KillAtStep(TrainerCallback):
    """Stops the process the hard way (an exception, nothing saved) when a step ends."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise SimulatedKill(f"killed at step {state.global_step}")


def _generate(folder, base=None, version="v1", image_size=56):
    tokenizer, model, processor, context_len = load_pretrained_model(str(folder), base, None, device="cpu")
    ids = tokenizer_image_token(PROMPTS[version], tokenizer, return_tensors="pt").unsqueeze(0)
    pixels = torch.zeros(1, 3, image_size, image_size)
    out = model.generate(ids, images=pixels, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    return model, out


@pytest.mark.parametrize("projector, tokens", [("mlp2x_gelu", 16), ("delta", 4)])
def test_stage1_then_stage2_then_load_and_generate(tmp_path, llama_base, train_tower, tiny_data, projector, tokens):
    images = tiny_data["image_folder"]
    stage1 = tmp_path / "stage1"
    trainer = train(argv=common_args(stage1, llama_base, train_tower, tiny_data["stage1"], images, version="plain",
                                     tune_mm_mlp_adapter=True, mm_projector_type=projector, scale_factor=2))
    assert trainer.model.num_image_tokens() == tokens
    files = sorted(p.name for p in stage1.iterdir())
    assert files == ["config.json", "mm_projector.bin", "mm_projector.safetensors", "trainer_state.json"]
    safe = load_file(stage1 / "mm_projector.safetensors")
    binary = torch.load(stage1 / "mm_projector.bin", weights_only=True)
    assert safe.keys() == binary.keys() and all(k.startswith("model.mm_projector.") for k in safe)
    assert all(torch.equal(safe[k], binary[k]) for k in safe)
    trained = trainer.model.get_model().mm_projector.state_dict()
    assert all(torch.equal(safe["model.mm_projector." + k], v) for k, v in trained.items())
    # only the projector trained: the LLM is the base's
    base_embed = load_file(Path(llama_base) / "model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(trainer.model.get_model().embed_tokens.weight, base_embed)

    stage2 = tmp_path / "stage2"
    start = ProjectorAtStart()
    trainer = train(argv=common_args(stage2, llama_base, train_tower, tiny_data["stage2"], images, version="v1",
                                     pretrain_mm_mlp_adapter=stage1 / "mm_projector.bin", mm_projector_type=projector,
                                     learning_rate="2e-5", image_aspect_ratio="pad", group_by_modality_length=True),
                    callbacks=[start])
    assert all(torch.equal(v, safe["model.mm_projector." + k]) for k, v in start.weights.items())
    assert (stage2 / "model.safetensors").is_file() and (stage2 / "tokenizer_config.json").is_file()
    config = json.loads((stage2 / "config.json").read_text())
    assert config["mm_projector_type"] == projector and config["conv_mode"] == "vicuna_v1"
    assert config["image_aspect_ratio"] == "pad" and config["tokenizer_model_max_length"] == 256
    assert config["mm_vision_select_layer"] == -2 and config["tune_mm_mlp_adapter"] is False
    assert config["mm_vision_tower"] == train_tower and config["use_mm_proj"] is True

    model, out = _generate(stage2)
    assert isinstance(model, LlavaLlamaForCausalLM) and model.num_image_tokens() == tokens
    assert out.shape == (1, 3)
    loaded = model.get_model().mm_projector.state_dict()
    assert all(torch.equal(v, trainer.model.get_model().mm_projector.state_dict()[k]) for k, v in loaded.items())


def test_gradient_accumulation_by_length_trains_like_one_batch(tmp_path, llama_base, train_tower, tiny_data):
    """4 samples per step as one batch, or as 2 length-sorted micro-batches of 2: the same samples,
    the same loss (normalised over the step's labelled tokens) and the same update (SGD, so the update
    is the gradient itself)."""
    weights = {}
    for name, batch, accumulation in (("whole", 4, 1), ("micro", 2, 2)):
        trainer = train(argv=common_args(tmp_path / name, llama_base, train_tower, tiny_data["stage2"],
                                         tiny_data["image_folder"], version="v1", mm_projector_type="mlp2x_gelu",
                                         group_by_modality_length=True, per_device_train_batch_size=batch,
                                         gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd",
                                         learning_rate="0.5", lr_scheduler_type="constant"))
        weights[name] = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
        weights[name + "_loss"] = trainer.state.log_history[0]["loss"]
    assert weights["micro_loss"] == pytest.approx(weights["whole_loss"], rel=1e-5)
    base = load_file(Path(llama_base) / "model.safetensors")["model.embed_tokens.weight"]
    assert not torch.equal(weights["whole"]["model.embed_tokens.weight"], base)  # the step did train
    for key, value in weights["whole"].items():
        torch.testing.assert_close(weights["micro"][key], value, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize("tower", [False, True], ids=["frozen-tower", "trained-tower"])
def test_stage1_killed_midway_resumes_to_the_same_end(tmp_path, llama_base, train_tower, tiny_data, tower):
    def args(out):
        extra = {"unfreeze_mm_vision_tower": True, "mm_vision_tower_lr": "1e-3"} if tower else {}
        return common_args(out, llama_base, train_tower, tiny_data["stage1"], tiny_data["image_folder"],
                           version="plain", tune_mm_mlp_adapter=True, mm_projector_type="mlp2x_gelu",
                           save_strategy="steps", save_steps=2, **extra)

    reference = tmp_path / "uninterrupted"
    train(argv=args(reference))
    run = tmp_path / "killed"
    with pytest.raises(SimulatedKill):
        train(argv=args(run), callbacks=[KillAtStep(3)])
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2"]
    checkpoint = run / "checkpoint-2"
    assert {"mm_projector.bin", "mm_projector.safetensors", "config.json", "optimizer.pt", "scheduler.pt",
            "rng_state.pth", "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    assert not (checkpoint / "model.safetensors").exists()  # the projector only, not the LLM

    trainer = train(argv=args(run))  # finds checkpoint-2 by itself, as upstream's train.py does
    steps = json.loads((reference / "trainer_state.json").read_text())["global_step"]
    assert steps == 4 and trainer.state.global_step == steps
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == steps
    ours, theirs = load_file(run / "mm_projector.safetensors"), load_file(reference / "mm_projector.safetensors")
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])
    if tower:  # the tower trained up to checkpoint-2 is read back from there, not restarted from its folder
        assert (checkpoint / "vision_tower" / "model.safetensors").is_file()
        ours, theirs = (load_file(out / "vision_tower" / "model.safetensors") for out in (run, reference))
        assert any(not torch.equal(theirs[k], v) for k, v in load_file(Path(train_tower) / "model.safetensors").items())
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key])


@pytest.mark.parametrize("added_tokens", [{}, {"mm_use_im_start_end": True}], ids=["no-tokens", "start-end"])
def test_lora_step_saves_what_load_pretrained_model_and_merge_read(tmp_path, chatml_base, train_tower, tiny_data,
                                                                   added_tokens):
    """With tokens added (start/end, or upstream's default --mm_use_im_patch_token True), peft saves the
    grown embedding matrices with the adapter: loading and merging give the base that vocabulary."""
    out = tmp_path / "lora"
    trainer = train(argv=common_args(out, chatml_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                     version="chatml", mm_projector_type="delta", lora_enable=True, lora_r=4,
                                     lora_alpha=8, learning_rate="1e-2", mm_projector_lr="2e-3", max_steps=2,
                                     **added_tokens))
    peft_model = trainer.model
    names = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    assert names and not any("mm_projector" in n or "vision_tower" in n or "lm_head" in n for n in names)
    lrs = sorted({g["initial_lr"] for g in trainer.optimizer.param_groups})  # "lr" has decayed
    assert lrs == [2e-3, 1e-2]
    assert {"adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin", "config.json"} <= {
        p.name for p in out.iterdir()}
    non_lora = torch.load(out / "non_lora_trainables.bin", weights_only=True)
    assert non_lora and all(k.startswith("base_model.model.model.mm_projector.") for k in non_lora)
    assert json.loads((out / "config.json").read_text())["conv_mode"] == "chatml"

    model, _ = _generate(out, base=chatml_base, version="chatml")
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer_image_token(PROMPTS["chatml"], tokenizer, return_tensors="pt").unsqueeze(0)
    pixels = torch.rand(1, 3, 56, 56)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids, images=pixels).logits
        torch.testing.assert_close(model(input_ids=ids, images=pixels).logits, expected, atol=1e-4, rtol=1e-4)

    import importlib.util

    spec = importlib.util.spec_from_file_location("merge_lora_weights",
                                                  Path(__file__).parents[2] / "scripts/merge_lora_weights.py")
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    merged = tmp_path / "merged"
    merge.main(["--model-path", str(out), "--model-base", chatml_base, "--save-model-path", str(merged)])
    _, full, _, _ = load_pretrained_model(str(merged), None, None, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(full(input_ids=ids, images=pixels).logits, expected, atol=1e-4, rtol=1e-4)


def test_qlora_step_keeps_the_projector_unquantized(tmp_path, llama_base, train_tower, tiny_data):
    import bitsandbytes as bnb

    out = tmp_path / "qlora"
    trainer = train(argv=common_args(out, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                     version="v1", mm_projector_type="mlp2x_gelu", lora_enable=True, lora_r=4,
                                     lora_alpha=8, bits=4, max_steps=1))
    llava = trainer.model.get_base_model()
    assert isinstance(llava.get_model().layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    projector = llava.get_model().mm_projector
    assert isinstance(projector[0], torch.nn.Linear) and not isinstance(projector[0], bnb.nn.Linear4bit)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in projector.parameters())
    assert trainer.state.global_step == 1
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    _, generated = _generate(out, base=llama_base)
    assert generated.shape == (1, 3)


class LLMWeightAtStart(TrainerCallback):
    """Records one LLM weight when training begins."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weight = model.get_model().layers[0].mlp.down_proj.weight.detach().clone()


@pytest.mark.parametrize("master", [True, False])
def test_bf16_without_deepspeed_keeps_fp32_master_weights(tmp_path, llama_base, train_tower, tiny_data, master):
    out = tmp_path / "bf16"
    start = LLMWeightAtStart()
    # lr 1e-6: each AdamW update is ~1e-6, far below bf16's resolution for weights of ~1e-2
    trainer = train(argv=common_args(out, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                     version="v1", mm_projector_type="delta", scale_factor=2, bf16=True,
                                     fp32_master_weights=master, learning_rate="1e-6", max_steps=2),
                    callbacks=[start])
    model = trainer.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.float32 if master else torch.bfloat16}
    assert {p.dtype for p in model.get_vision_tower().parameters()} == {torch.bfloat16}  # frozen: stays bf16
    assert start.weight.dtype == (torch.float32 if master else torch.bfloat16)
    changed = (model.get_model().layers[0].mlp.down_proj.weight != start.weight).float().mean().item()
    if master:
        assert changed > 0.9  # the small updates accumulate in fp32
    else:
        assert changed < 0.05  # in bf16 they round away, as upstream's non-DeepSpeed bf16 run does
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    _, generated = _generate(out)
    assert generated.shape == (1, 3)


def test_unfrozen_vision_tower_gets_its_own_learning_rate(tmp_path, llama_base, train_tower, tiny_data):
    trainer = train(argv=common_args(tmp_path / "out", llama_base, train_tower, tiny_data["stage1"],
                                     tiny_data["image_folder"], version="plain", tune_mm_mlp_adapter=True,
                                     mm_projector_type="mlp2x_gelu", unfreeze_mm_vision_tower=True,
                                     mm_vision_tower_lr="1e-4", max_steps=1))
    tower = trainer.model.get_vision_tower()
    assert all(p.requires_grad for p in tower.parameters())
    tower_ids = {id(p) for p in tower.parameters()}
    tower_groups = [g for g in trainer.optimizer.param_groups if any(id(p) in tower_ids for p in g["params"])]
    assert tower_groups and all(g["initial_lr"] == 1e-4 for g in tower_groups)
    # stage 1 keeps the trained tower next to the projector, and its config.json names it
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["unfreeze_mm_vision_tower"] is True and config["mm_vision_tower"] == str(out / "vision_tower")
    saved = load_file(out / "vision_tower" / "model.safetensors")
    original = load_file(Path(train_tower) / "model.safetensors")
    trained = tower.vision_tower.state_dict()
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[k], trained[k]) for k in saved)
    assert any(not torch.equal(saved[k], original[k]) for k in saved)
    _, model, _, _ = load_pretrained_model(str(out), llama_base, None, device="cpu")
    loaded = model.get_vision_tower().vision_tower.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in saved)


def test_training_on_from_a_checkpoint_keeps_the_tower_it_trained(tmp_path, llama_base, train_tower, tiny_data):
    """Stage 2 with the tower unfrozen saves a full checkpoint holding the trained tower; training on
    from that checkpoint starts from those weights, not from the tower folder its config names."""
    first = tmp_path / "stage2"
    trainer = train(argv=common_args(first, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                     version="v1", mm_projector_type="mlp2x_gelu", unfreeze_mm_vision_tower=True,
                                     mm_vision_tower_lr="1e-2", max_steps=2))
    trained = {k: v.detach().clone() for k, v in trainer.model.get_vision_tower().vision_tower.state_dict().items()}
    original = load_file(Path(train_tower) / "model.safetensors")
    assert any(not torch.equal(trained[k], original[k]) for k in original)

    class TowerAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.weights = {k: v.detach().clone() for k, v in model.get_vision_tower().vision_tower.state_dict().items()}

    start = TowerAtStart()
    train(argv=common_args(tmp_path / "again", str(first), train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                           version="v1", mm_projector_type="mlp2x_gelu", max_steps=1), callbacks=[start])
    assert all(torch.equal(start.weights[k], trained[k]) for k in trained)


def test_training_on_from_a_released_delta_checkpoint_starts_from_its_projector(tmp_path, llama_base, train_tower,
                                                                                tiny_data):
    """finetune_task_delta.sh's case: --model_name_or_path is a Delta-LLaVA checkpoint written by the
    released code (config "delatallava", the projector under the released names) and the recipe says
    --mm_projector_type delta. Training starts from that projector, not from a fresh one."""
    first = tmp_path / "stage2"
    trainer = train(argv=common_args(first, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                     version="v1", mm_projector_type="delta", max_steps=1))
    model = trainer.model
    trained = {k: v.detach().clone() for k, v in model.get_model().mm_projector.state_dict().items()}
    released = tmp_path / "released"
    released.mkdir()
    state = {k: v for k, v in model.state_dict().items() if ".mm_projector." not in k}
    state.update(released_projector_state(model))
    torch.save(state, released / "pytorch_model.bin")
    config = json.loads((first / "config.json").read_text())
    (released / "config.json").write_text(json.dumps({**config, "mm_projector_type": "delatallava"}))
    AutoTokenizer.from_pretrained(first).save_pretrained(released)

    for projector_type in ("delta", "delatallava"):
        start = ProjectorAtStart()
        train(argv=common_args(tmp_path / f"task-{projector_type}", str(released), train_tower, tiny_data["stage2"],
                               tiny_data["image_folder"], version="v1", mm_projector_type=projector_type,
                               max_steps=1), callbacks=[start])
        assert start.weights.keys() == trained.keys()
        assert all(torch.equal(start.weights[k], trained[k]) for k in trained), projector_type


def test_task_lora_on_a_llava_checkpoint_loads_with_that_checkpoint_as_base(tmp_path, llama_base, train_tower,
                                                                           tiny_data):
    """finetune_task_lora_delta.sh's case: LoRA on a trained Delta-LLaVA checkpoint, answered with
    --model-base that checkpoint. The adapter starts from its projector and LLM, and the loaded
    model gives the trained model's logits."""
    first = tmp_path / "stage2"
    base = train(argv=common_args(first, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                  version="v1", mm_projector_type="delta", max_steps=1)).model
    trained = {k: v.detach().clone() for k, v in base.get_model().mm_projector.state_dict().items()}
    start = ProjectorAtStart()
    task = tmp_path / "task-lora"
    trainer = train(argv=common_args(task, str(first), train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                                     version="v1", mm_projector_type="delta", lora_enable=True, lora_r=4,
                                     lora_alpha=8, learning_rate="1e-2", mm_projector_lr="2e-3", max_steps=2),
                    callbacks=[start])
    assert all(torch.equal(start.weights[k], trained[k]) for k in trained)
    tokenizer, model, _, _ = load_pretrained_model(str(task), str(first), None, device="cpu")
    ids = tokenizer_image_token(PROMPTS["v1"], tokenizer, return_tensors="pt").unsqueeze(0)
    pixels = torch.rand(1, 3, 56, 56)
    peft_model = trainer.model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids, images=pixels).logits
        torch.testing.assert_close(model(input_ids=ids, images=pixels).logits, expected, atol=1e-4, rtol=1e-4)
        untrained = base.eval()(input_ids=ids, images=pixels).logits
    assert not torch.allclose(untrained, expected, atol=1e-3)  # the adapter changed the answer


def test_training_on_with_another_projector_says_it_starts_a_fresh_one(tmp_path, llama_base, train_tower, tiny_data,
                                                                       caplog):
    first = tmp_path / "stage2"
    train(argv=common_args(first, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                           version="v1", mm_projector_type="delta", max_steps=1))
    with caplog.at_level("WARNING"):
        train(argv=common_args(tmp_path / "again", str(first), train_tower, tiny_data["stage2"],
                               tiny_data["image_folder"], version="v1", mm_projector_type="mlp2x_gelu", max_steps=1))
    assert ("replace the checkpoint's delta projector with a new mlp2x_gelu projector (type delta -> mlp2x_gelu); "
            "its weights are not used") in caplog.text


def test_training_on_reads_the_vision_layers_the_arguments_name(tmp_path, llama_base, train_tower, tiny_data,
                                                               caplog):
    """Training on from a checkpoint keeps its tower object, which read the layers the checkpoint's
    config named. The training arguments' layers are used instead (as the saved config says, so
    that the trained projector sees the same features when the result is loaded), and the change is
    logged. An mlp2x_gelu checkpoint trained on as delta gets the levels delta reads."""
    delta, mlp = tmp_path / "delta", tmp_path / "mlp"
    for out, projector_type in ((delta, "delta"), (mlp, "mlp2x_gelu")):
        train(argv=common_args(out, llama_base, train_tower, tiny_data["stage2"], tiny_data["image_folder"],
                               version="v1", mm_projector_type=projector_type, max_steps=1))
    cases = [(delta, dict(mm_vision_select_layer="-1", mm_delta_layers="0,1,2"),
              "select layer 3 -> 4, extra layers (1, 2, 3) -> (0, 1, 2)"),
             (mlp, {}, "extra layers () -> (1, 2, 3)")]
    for checkpoint, flags, change in cases:
        out = tmp_path / f"on-{checkpoint.name}"
        caplog.clear()
        with caplog.at_level("WARNING"):
            trainer = train(argv=common_args(out, str(checkpoint), train_tower, tiny_data["stage2"],
                                             tiny_data["image_folder"], version="v1", mm_projector_type="delta",
                                             max_steps=1, **flags))
        assert f"change the vision features the projector reads from the checkpoint's: {change}" in caplog.text
        used = trainer.model.get_vision_tower()
        _, reloaded, _, _ = load_pretrained_model(str(out), None, None, device="cpu")
        tower = reloaded.get_vision_tower()
        assert (used.select_layer, used.extra_layers) == (tower.select_layer, tower.extra_layers)
    assert (tower.select_layer, tower.extra_layers) == (3, (1, 2, 3))


def test_recipes_report_to_wandb_offline(tmp_path, llama_base, train_tower, tiny_data, monkeypatch):
    """The recipes pass --report_to wandb (wandb comes with the train extra, as upstream lists it):
    an offline run records the training loss on disk, nothing is sent."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    try:
        train(argv=common_args(tmp_path / "stage1", llama_base, train_tower, tiny_data["stage1"],
                               tiny_data["image_folder"], version="plain", tune_mm_mlp_adapter=True, max_steps=2,
                               report_to="wandb", run_name="tiny-stage1"))
        assert wandb.run is not None and wandb.run.name == "tiny-stage1"
        summary = wandb.run.summary
        assert summary.get("train/loss") is not None and summary.get("train/global_step") == 2
    finally:
        wandb.finish()
    [run] = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))


# ------------------------------------------------------------------------------------ bad input


def test_bad_samples_stop_the_run_before_the_model_loads(tmp_path, llama_base, train_tower, tiny_data):
    samples = json.loads(Path(tiny_data["stage2"]).read_text())
    samples[1] = {**samples[1], "image": "stage2/does-not-exist.png"}
    samples[2] = {"id": "no-conversations", "image": samples[2].get("image", "x.png")}
    data = write_json(tmp_path / "bad.json", samples)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        train(argv=common_args(out, config_only_llm(tmp_path / "llm"), train_tower, data, tiny_data["image_folder"],
                               version="v1"))
    message = str(err.value)
    assert f"sample {samples[1]['id']!r} (index 1)" in message and "does-not-exist.png" in message
    assert "sample 'no-conversations' (index 2)" in message and "--skip_bad_samples" in message
    report = json.loads((out / "data_check_report.json").read_text())
    assert report["counts"] == {"missing_image": 1, "no_conversations": 1}

    trainer = train(argv=common_args(out, llama_base, train_tower, data, tiny_data["image_folder"], version="v1",
                                     mm_projector_type="mlp2x_gelu", skip_bad_samples=True, max_steps=1))
    assert len(trainer.train_dataset) == len(samples) - 2


def test_skip_bad_samples_checks_every_length_and_keeps_one_report(tmp_path, llama_base, train_tower, tiny_data):
    """A sample too long for model_max_length past the tokenization check's first samples: with
    --skip_bad_samples it is found before training, skipped and listed with the data check's own
    finds in one report; without it, the run stops when training reaches it, naming it."""
    samples = [s for s in json.loads(Path(tiny_data["stage2"]).read_text()) if s.get("image")]
    samples[0] = {**samples[0], "image": "stage2/does-not-exist.png"}
    samples.append({"id": "huge-late", "image": samples[1]["image"], "conversations": [
        {"from": "human", "value": "<image>\n" + " ".join(["word"] * 400)}, {"from": "gpt", "value": "ok"}]})
    data = write_json(tmp_path / "data.json", samples)
    out = tmp_path / "skip"
    trainer = train(argv=common_args(out, llama_base, train_tower, data, tiny_data["image_folder"], version="v1",
                                     mm_projector_type="mlp2x_gelu", skip_bad_samples=True,
                                     tokenization_check_samples=2, max_steps=1))
    assert len(trainer.train_dataset) == len(samples) - 2
    report = json.loads((out / "data_check_report.json").read_text())
    assert report["counts"] == {"missing_image": 1, "too_long": 1} and report["num_samples"] == len(samples)
    assert [b["sample_id"] for b in report["bad"]] == [samples[0]["id"], "huge-late"]

    samples[0] = samples[1]
    data = write_json(tmp_path / "data2.json", samples)
    with pytest.raises(SampleTooLongError, match=r"sample 'huge-late' \(index \d+\) does not fit"):
        train(argv=common_args(tmp_path / "stop", llama_base, train_tower, data, tiny_data["image_folder"],
                               version="v1", mm_projector_type="mlp2x_gelu", tokenization_check_samples=2,
                               per_device_train_batch_size=len(samples), max_steps=1))


@pytest.mark.parametrize("start_end", [False, True])
def test_stage1_trains_the_embeddings_only_for_start_end_tokens(tmp_path, llama_base, train_tower, tiny_data,
                                                               start_end):
    """Upstream's default --mm_use_im_patch_token True adds a token nobody reads: the embeddings
    stay frozen. With --mm_use_im_start_end they train with the projector and are saved with it."""
    out = tmp_path / "stage1"
    trainer = train(argv=common_args(out, llama_base, train_tower, tiny_data["stage1"], tiny_data["image_folder"],
                                     version="plain", tune_mm_mlp_adapter=True, mm_projector_type="mlp2x_gelu",
                                     mm_use_im_patch_token=True, mm_use_im_start_end=start_end, max_steps=2))
    trainable = sorted({n.split(".")[1] for n, p in trainer.model.named_parameters() if p.requires_grad})
    assert trainable == (["embed_tokens", "mm_projector"] if start_end else ["mm_projector"])
    base = load_file(Path(llama_base) / "model.safetensors")["model.embed_tokens.weight"]
    embed = trainer.model.get_model().embed_tokens.weight
    assert torch.equal(embed[:len(base)], base) is not start_end
    saved = load_file(out / "mm_projector.safetensors")
    assert ("model.embed_tokens.weight" in saved) is start_end
    if not start_end:
        return
    # The trained <im_start>/<im_end> rows reach inference (on the base) and stage 2.
    trained = embed[-2:].detach().clone()
    assert not torch.equal(trained, embed[:len(base)].mean(0, keepdim=True).expand(2, -1))
    _, model, _, _ = load_pretrained_model(str(out), llama_base, None, device="cpu")
    torch.testing.assert_close(model.get_input_embeddings().weight[-2:], trained)
    torch.testing.assert_close(model.get_input_embeddings().weight[:len(base)], base)

    class EmbeddingsAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.rows = model.get_input_embeddings().weight[-2:].detach().clone()

    start = EmbeddingsAtStart()
    train(argv=common_args(tmp_path / "stage2", llama_base, train_tower, tiny_data["stage2"],
                           tiny_data["image_folder"], version="v1", mm_projector_type="mlp2x_gelu",
                           pretrain_mm_mlp_adapter=out / "mm_projector.bin", mm_use_im_patch_token=True,
                           mm_use_im_start_end=True, max_steps=1), callbacks=[start])
    torch.testing.assert_close(start.rows, trained)


def test_stage1_trains_start_end_rows_of_tied_embeddings(tmp_path, llama_base, train_tower, tiny_data):
    """An LLM whose LM head is its embedding matrix (tie_word_embeddings, as SmolLM2): the
    <im_start>/<im_end> rows still train in stage 1 and are saved with the projector."""
    tied = tmp_path / "tied"
    config = AutoConfig.from_pretrained(llama_base)
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    llm = LlamaForCausalLM(config)
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
    llm.save_pretrained(tied)
    AutoTokenizer.from_pretrained(llama_base).save_pretrained(tied)
    out = tmp_path / "stage1"
    trainer = train(argv=common_args(out, str(tied), train_tower, tiny_data["stage1"], tiny_data["image_folder"],
                                     version="plain", tune_mm_mlp_adapter=True, mm_projector_type="mlp2x_gelu",
                                     mm_use_im_patch_token=False, mm_use_im_start_end=True, max_steps=2))
    embed = trainer.model.get_model().embed_tokens.weight
    assert embed.requires_grad
    mean_init = llm.get_input_embeddings().weight.mean(0)
    assert not torch.allclose(embed[-2:], mean_init.expand(2, -1))
    torch.testing.assert_close(load_file(out / "mm_projector.safetensors")["model.embed_tokens.weight"], embed.detach())


def test_unsupported_patch_merge_type_stops_before_training(tmp_path, llama_base, train_tower, tiny_data):
    with pytest.raises(ValueError, match="mm_patch_merge_type 'spatial_unpad' is not supported; use 'flat'"):
        train(argv=common_args(tmp_path / "out", llama_base, train_tower, tiny_data["stage1"],
                               tiny_data["image_folder"], version="plain", tune_mm_mlp_adapter=True,
                               mm_patch_merge_type="spatial_unpad", max_steps=1))


def test_invalid_json_names_file_and_position(tmp_path, train_tower):
    data = tmp_path / "broken.json"
    data.write_text('[{"id": "a", "conversations": [}]')
    with pytest.raises(ValueError, match=r"broken\.json: invalid JSON at line 1, column 32"):
        train(argv=common_args(tmp_path / "out", config_only_llm(tmp_path / "llm"), train_tower, str(data),
                               str(tmp_path)))


@pytest.fixture(scope="module")
def odd_tokenizer_base(tmp_path_factory, llama_tokenizer_dir):
    """A base LLM whose tokenizer has an added token spanning "ASSISTANT:" and a reply's first letter."""
    root = tmp_path_factory.mktemp("odd_base")
    tokenizer = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    tokenizer.add_tokens(["T: A"])
    tokenizer.save_pretrained(root / "tok")
    return make_base_llm(root / "llm", str(root / "tok"))


def _text_samples(n_bad: int, n_good: int):
    def sample(sid, reply):
        return {"id": sid, "conversations": [{"from": "human", "value": "Say something."},
                                             {"from": "gpt", "value": reply}]}

    return [sample(f"bad-{i}", "A word.") for i in range(n_bad)] + [sample(f"good-{i}", "The word.")
                                                                      for i in range(n_good)]


def _text_only_args(out, base, data, **extra):
    args = common_args(out, base, "unused", data, "unused", version="v1", **extra)
    i = args.index("--vision_tower")
    return args[:i] + args[i + 2:]


def test_tokenization_mismatch_fails_before_training(tmp_path, odd_tokenizer_base):
    data = write_json(tmp_path / "data.json", _text_samples(n_bad=3, n_good=5))
    with pytest.raises(ValueError, match=r"tokenization mismatch in 3 of 8 checked samples; first: 'bad-0'.*'bad-1'"):
        train(argv=_text_only_args(tmp_path / "out", odd_tokenizer_base, data))


def test_tokenization_mismatch_met_during_training_is_counted_and_fails(tmp_path, odd_tokenizer_base):
    data = write_json(tmp_path / "data.json", _text_samples(n_bad=2, n_good=6))
    with pytest.raises(ValueError, match=r"Tokenization mismatch in \d distinct training samples so far \(first: "
                                         r"\['bad-.*allows 0 in this run"):
        train(argv=_text_only_args(tmp_path / "out", odd_tokenizer_base, data, tokenization_check_samples=0))
    # A threshold the data stays within lets the run finish, over several epochs too: a sample met
    # again is not counted again. The mismatched samples were counted, not hidden.
    trainer = train(argv=_text_only_args(tmp_path / "out2", odd_tokenizer_base, data, tokenization_check_samples=0,
                                         max_tokenization_mismatch_ratio=0.25, num_train_epochs=3))
    assert trainer.state.epoch == 3
    assert trainer.mismatches.count == 2 and sorted(trainer.mismatches.seen) == ["bad-0", "bad-1"]
