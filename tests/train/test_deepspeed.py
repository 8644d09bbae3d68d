"""DeepSpeed ZeRO-2 and ZeRO-3 with 2 CPU processes (gloo), through the real ``llava/train/train_mem.py``.

* ZeRO-2, stage 1 (delta projector): checkpoints hold the projector and the DeepSpeed state without
  the frozen LLM; a run that lost its last checkpoint resumes from the one before and ends with the
  same step count and the same projector.
* ZeRO-3, stage 2 in bf16 from that projector: the data has text-only samples so that one step is
  text-only on both ranks and one is text-only on one rank only (no hang); the saved checkpoint
  holds the gathered 16-bit weights and loads with ``load_pretrained_model``; rewritten in the
  released Delta-LLaVA format, it is the start of a ZeRO-3 task fine-tuning that keeps its projector.
* ZeRO-3, LoRA in bf16 with the tower unfrozen (the finetune_lora recipe's setting): it trains, and
  the LoRA folder loads with the tower it trained.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llava.data import synthetic
from llava.data.sampler import get_modality_length_grouped_indices
from tests.conftest import released_projector_state
from tests.train.conftest import common_args

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 420  # generous: the first run compiles DeepSpeed's shared-memory op (~15 s) and CPUs are shared


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], log: Path) -> str:
    """Runs train_mem.py on 2 CPU processes with torchrun; returns the combined output."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "TMPDIR": str(log.parent),  # torchrun's per-run log folders (torchelastic_*) stay with the test
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path(tempfile.gettempdir()) / "llava-torch-extensions"))}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "llava/train/train_mem.py", *args]
    try:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        pytest.fail(f"DeepSpeed run did not finish in {TIMEOUT} s (hang?):\n{output[-4000:]}")
    output = result.stdout + result.stderr
    log.write_text(output)
    if result.returncode != 0:
        pytest.fail(f"DeepSpeed run failed ({result.returncode}):\n{output[-6000:]}")
    return output


@pytest.fixture(scope="module")
def ds_data(tmp_path_factory) -> dict:
    """8 stage-1 samples; 8 stage-2 samples of which 3 are text-only."""
    return synthetic.generate(tmp_path_factory.mktemp("ds_data"), synthetic.SyntheticConfig(
        num_stage1=8, num_stage2=8, num_eval=0, image_size=56, text_only_fraction=0.375))


@pytest.fixture(scope="module")
def zero2_stage1(tmp_path_factory, llama_base, train_tower, ds_data) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("zero2") / "stage1"
    args = common_args(out, llama_base, train_tower, ds_data["stage1"], ds_data["image_folder"], version="plain",
                       tune_mm_mlp_adapter=True, mm_projector_type="delta", per_device_train_batch_size=1,
                       save_strategy="steps", save_steps=2, deepspeed=str(REPO / "scripts/zero2.json"))
    launch(args, out.parent / "run1.log")
    return out, args


def test_zero2_stage1_checkpoints_resume(zero2_stage1):
    out, args = zero2_stage1
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4  # 8 samples / (1 x 2 ranks)
    checkpoint = out / "checkpoint-2"
    names = {p.name for p in checkpoint.iterdir()}
    assert {"mm_projector.bin", "mm_projector.safetensors", "config.json", "trainer_state.json",
            "rng_state_0.pth", "rng_state_1.pth", "global_step2"} <= names
    assert not {"model.safetensors", "pytorch_model.bin"} & names
    # the DeepSpeed state leaves out the frozen LLM and tower (a file this test's run just wrote)
    ds_state = torch.load(checkpoint / "global_step2" / "mp_rank_00_model_states.pt", weights_only=False)
    assert ds_state["module"] and all(".mm_projector." in key for key in ds_state["module"])
    reference = load_file(out / "mm_projector.safetensors")

    # Lose everything after checkpoint-2, as a run killed during step 3 would, and launch again.
    shutil.rmtree(out / "checkpoint-4")
    for name in ("mm_projector.bin", "mm_projector.safetensors", "trainer_state.json", "config.json"):
        (out / name).unlink()
    log = launch(args, out.parent / "run2.log")
    assert "Resuming from" in log and "checkpoint-2" in log
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    resumed = load_file(out / "mm_projector.safetensors")
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value)


def test_zero3_stage2_bf16_with_text_only_batches(tmp_path, zero2_stage1, llama_base, train_tower, ds_data):
    samples = json.loads(Path(ds_data["stage2"]).read_text())
    signs = [1 if "image" in s else -1 for s in samples]
    assert signs.count(-1) == 3
    # With batch 1 on 2 ranks, megabatches hold 2 samples: one is text-only on both ranks, and the
    # leftover pairs an image sample with a text-only one (text-only on one rank only).
    order = get_modality_length_grouped_indices(signs, batch_size=1, world_size=2,
                                                generator=torch.Generator().manual_seed(0))
    steps = [{signs[i] for i in order[k:k + 2]} for k in range(0, len(order), 2)]
    assert {-1} in steps and {1, -1} in steps

    stage1, _ = zero2_stage1
    out = tmp_path / "stage2"
    args = common_args(out, llama_base, train_tower, ds_data["stage2"], ds_data["image_folder"], version="v1",
                       mm_projector_type="delta", pretrain_mm_mlp_adapter=str(stage1 / "mm_projector.safetensors"),
                       per_device_train_batch_size=1, group_by_modality_length=True, image_aspect_ratio="pad",
                       bf16=True, gradient_checkpointing=True, deepspeed=str(REPO / "scripts/zero3.json"))
    launch(args, tmp_path / "zero3.log")
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4

    saved = load_file(out / "model.safetensors")
    assert saved["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert saved["model.embed_tokens.weight"].shape[1] == 64  # gathered, not an empty ZeRO-3 shard
    assert saved["model.mm_projector.mlp.2.weight"].shape == (64, 64)

    from llava.mm_utils import tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    tokenizer, model, _, _ = load_pretrained_model(str(out), None, None, device="cpu")
    ids = tokenizer_image_token("USER: <image>\nWhat? ASSISTANT:", tokenizer, return_tensors="pt").unsqueeze(0)
    generated = model.generate(ids, images=torch.zeros(1, 3, 56, 56), max_new_tokens=3, min_new_tokens=3,
                               do_sample=False)
    assert generated.shape == (1, 3)

    # finetune_task_delta.sh under ZeRO-3 from that checkpoint rewritten in the released code's format
    # (config "delatallava", released projector names): at lr 0 the saved projector is the one it started from
    released = tmp_path / "released"
    released.mkdir()
    state = {k: v for k, v in saved.items() if ".mm_projector." not in k}
    state.update(released_projector_state(model))
    torch.save(state, released / "pytorch_model.bin")
    config = json.loads((out / "config.json").read_text())
    (released / "config.json").write_text(json.dumps({**config, "mm_projector_type": "delatallava"}))
    tokenizer.save_pretrained(released)
    task = tmp_path / "task"
    launch(common_args(task, str(released), train_tower, ds_data["stage2"], ds_data["image_folder"], version="v1",
                       mm_projector_type="delta", per_device_train_batch_size=1, bf16=True, learning_rate=0,
                       max_steps=1, deepspeed=str(REPO / "scripts/zero3.json")), tmp_path / "task.log")
    after = load_file(task / "model.safetensors")
    for key, value in model.get_model().mm_projector.state_dict().items():
        torch.testing.assert_close(after[f"model.mm_projector.{key}"], value.to(after[f"model.mm_projector.{key}"].dtype))


def test_zero3_lora_bf16_with_a_trained_tower_loads_as_trained(tmp_path, llama_base, train_tower, ds_data):
    """The finetune_lora recipe's setting (ZeRO-3, bf16) with the tower unfrozen: the run starts
    (peft's fp32 adapters next to a bf16 projector once stopped ZeRO-3 before the first step), and
    loading the LoRA folder on its base keeps the tower it trained instead of re-reading the folder."""
    out = tmp_path / "lora"
    args = common_args(out, llama_base, train_tower, ds_data["stage2"], ds_data["image_folder"], version="v1",
                       mm_projector_type="mlp2x_gelu", lora_enable=True, lora_r=4, lora_alpha=8,
                       mm_projector_lr="2e-5", unfreeze_mm_vision_tower=True, mm_vision_tower_lr="1e-2",
                       per_device_train_batch_size=2, max_steps=2, bf16=True,
                       deepspeed=str(REPO / "scripts/zero3.json"))
    launch(args, tmp_path / "lora.log")
    assert (out / "adapter_config.json").is_file()

    from llava.model import weights
    from llava.model.builder import load_pretrained_model

    trained = {k: v for k, v in weights.read_non_lora_trainables(out).items() if ".vision_tower." in k}
    original = load_file(Path(train_tower) / "model.safetensors")
    assert trained and all(v.dtype == torch.bfloat16 for v in trained.values())
    _, model, _, _ = load_pretrained_model(str(out), llama_base, None, device="cpu", dtype="float32")
    state = model.state_dict()
    changed = 0
    for key, value in trained.items():
        torch.testing.assert_close(state[key], value.float(), msg=key)
        changed += not torch.equal(value.float(), original[key.split("vision_tower.vision_tower.", 1)[1]].float())
    assert changed > 0  # the tower did train
