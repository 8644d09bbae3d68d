"""Benchmark presets: model shapes, precision and measurement sizes, each declared once.

Every preset builds the same five projector settings on one vision-tower grid; only shapes and
repeat counts differ. Weights are random (speed does not depend on their values).

- ``7b``: LLaVA-1.5-7B shapes -- Vicuna-7B (Llama, 4096 wide, 32 layers) and CLIP ViT-L/14 at
  336 px (24 layers, 1024 wide, 24 x 24 grid) -- in bf16 on CUDA.
- ``cpu``: the embedded LLM's shape (SmolLM2-135M) with a CLIP-shaped 336-px/14 tower (24 x 24
  grid) narrowed to 192 wide x 12 layers, so that the tower's share of a 576-token prefill in
  FLOPs (~6%) stays close to CLIP-L's share next to Vicuna-7B (~4%); the delta layers keep the
  reference's positions relative to depth (12, 16, 22, 23 of 24 -> 6, 8, 10, 11 of 12).
- ``tiny``: CI-sized (12 x 12 grid, 2-layer LLM, one step of everything) so the benchmark code
  runs in the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Setting:
    """One projector configuration of a run (``scale_factor`` is ignored by ``mlp2x_gelu``)."""

    projector: str
    scale_factor: int = 1

    def label(self, tokens: int) -> str:
        return f"{self.projector}@{tokens}"


#: The settings every run compares, baseline first: LLaVA-1.5's projector at the full grid, the
#: same-budget average-pool ablation, and delta at s = 2, 3, 4 (144, 64, 36 tokens on 24 x 24).
SETTINGS: tuple[Setting, ...] = (
    Setting("mlp2x_gelu", 1),
    Setting("avgpool", 2),
    Setting("delta", 2),
    Setting("delta", 3),
    Setting("delta", 4),
)
BASELINE = SETTINGS[0]


def parse_settings(text: str) -> tuple[Setting, ...]:
    """``mlp2x_gelu:1,delta:2`` -> settings (projector:scale_factor; the scale defaults to 1).

    Raises:
        ValueError: an unknown projector or a scale that is not a positive integer, naming the item
            (so a bad ``--settings`` stops before anything is measured).
    """
    from llava.model.multimodal_projector.builder import projector_class  # registers the projectors

    out = []
    for item in text.split(","):
        name, _, scale = item.strip().partition(":")
        projector_class(name)
        if scale and not (scale.isdigit() and int(scale) >= 1):
            raise ValueError(f"--settings item {item.strip()!r}: the scale factor must be a positive integer")
        out.append(Setting(name, int(scale) if scale else 1))
    return tuple(out)


def settings_argument(text: str) -> tuple[Setting, ...]:
    """``parse_settings`` for argparse, whose message then says what is wrong with ``--settings``."""
    try:
        return parse_settings(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


CHECKPOINTING = ("on", "off", "auto")


@dataclass(frozen=True)
class Preset:
    """Shapes and sizes of one benchmark run.

    Attributes:
        tower: ``CLIPVisionConfig`` keyword arguments (random init).
        llm: Llama config keyword arguments (random init).
        delta_layers: ``mm_delta_layers`` for the tower's depth.
        device / dtype: where and in what precision everything runs ("cuda" / "bfloat16", ...).
        text_tokens: text tokens per sample around the one image token (prompt for inference,
            prompt + answer for a stage-2 training sample; the last two thirds are labelled).
        caption_tokens: text tokens of a stage-1 sample. Stage 1 uses the ``plain`` template:
            the image, then the caption, every caption token labelled. LCS-558K's captions are
            BLIP captions of about 9 words (LAION-COCO's BLIP captions average 8.99 words), about
            12-14 Llama tokens with the closing newline; 16 rounds that up.
        batch_sizes: inference batch sizes.
        short_new_tokens / long_new_tokens: forced answer lengths (VQA-style / long answer).
        train_batch: samples per training step (stage 2, and stage 1 unless ``stage1_batch`` is set).
        stage1_batch: samples per stage-1 step, when it differs (LLaVA-1.5's recipes: 32 per GPU in
            pretrain.sh, 16 in finetune.sh).
        warmup / repeats: untimed and timed runs of each short measurement; ``long_repeats``
            and ``train_steps`` for the long-answer generation and training steps.
        stage2: "full", "lora" or "auto" (full finetuning when it fits the device, else LoRA).
        lora_r / lora_alpha: the LoRA recipe's rank and alpha (finetune_lora.sh: 128 / 256).
        gradient_checkpointing: "on" (as the recipes), "off", or "auto": off when the step fits the
            device without it (tried first on CUDA; an out-of-memory step is retried with it on),
            else on. The results record which ran.
        threads: CPU threads for torch (``None``: torch's default, one per core).
        isolate: measure each setting in a fresh process (clean heap, allocator and caches, so
            peak memory and timings do not carry over from the previous setting).
    """

    name: str
    description: str
    tower: dict
    llm: dict
    delta_layers: str
    device: str = "cpu"
    dtype: str = "float32"
    text_tokens: int = 48
    caption_tokens: int = 16
    batch_sizes: tuple[int, ...] = (1, 16)
    short_new_tokens: int = 4
    long_new_tokens: int = 128
    train_batch: int = 8
    stage1_batch: int | None = None
    warmup: int = 1
    repeats: int = 3
    long_repeats: int = 2
    train_steps: int = 3
    stage2: str = "auto"
    lora_r: int = 128
    lora_alpha: int = 256
    stage1_lr: float = 1e-3
    stage2_lr: float = 2e-5
    gradient_checkpointing: str = "on"
    threads: int | None = None
    isolate: bool = True
    settings: tuple[Setting, ...] = field(default=SETTINGS)

    def __post_init__(self):
        least = {"warmup": 0, "text_tokens": 1, "caption_tokens": 1, "short_new_tokens": 1, "long_new_tokens": 1,
                 "train_batch": 1, "stage1_batch": 1, "repeats": 1, "long_repeats": 1, "train_steps": 1,
                 "threads": 1}
        for name, low in least.items():
            value = getattr(self, name)
            if value is not None and value < low:  # None: the train batch, torch's threads
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"--batch-sizes must be at least 1, got {self.batch_sizes}")
        grid = self.grid_side
        for setting in self.settings:
            if setting.scale_factor < 1 or grid % setting.scale_factor:
                raise ValueError(f"setting {setting.projector}:{setting.scale_factor}: the scale factor must divide "
                                 f"the {grid} x {grid} grid of preset {self.name!r}")
        if self.gradient_checkpointing not in CHECKPOINTING:
            raise ValueError(f"gradient_checkpointing must be one of {CHECKPOINTING}, "
                             f"got {self.gradient_checkpointing!r}")

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(self, **changes)

    def batch(self, stage: str) -> int:
        """Samples per training step of ``stage`` ("stage1", or a stage-2 mode)."""
        return self.stage1_batch if stage == "stage1" and self.stage1_batch else self.train_batch

    @property
    def grid_side(self) -> int:
        return self.tower["image_size"] // self.tower["patch_size"]


CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 tie_word_embeddings=False)
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
                    rope_theta=100000.0, tie_word_embeddings=True)
CPU_TOWER = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=12, num_attention_heads=3,
                 image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)

PRESETS: dict[str, Preset] = {
    "7b": Preset(
        name="7b",
        description="LLaVA-1.5-7B shapes: Vicuna-7B + CLIP ViT-L/14-336 (24x24 grid), random weights, bf16, CUDA",
        tower=CLIP_L_336,
        llm=VICUNA_7B,
        delta_layers="12,16,22,23",
        device="cuda",
        dtype="bfloat16",
        train_batch=16,  # finetune.sh: 16 per GPU
        stage1_batch=32,  # pretrain.sh: 32 per GPU
        warmup=2,
        repeats=10,  # batch-1 calls are host-bound and jittery on a shared host: medians of 10
        long_repeats=3,
        train_steps=5,
    ),
    "cpu": Preset(
        name="cpu",
        description=("SmolLM2-135M-shaped LLM + CLIP-shaped 336-px/14 tower (24x24 grid) narrowed to "
                     "192 wide x 12 layers, random weights, float32, CPU"),
        tower=CPU_TOWER,
        llm=SMOLLM2_135M,
        delta_layers="6,8,10,11",
        train_batch=4,
        warmup=1,
        repeats=5,  # a shared 2-core machine: medians of 5 (3 left +-15% between runs)
        long_repeats=1,
        train_steps=3,
    ),
    "tiny": Preset(
        name="tiny",
        description="CI-sized: 2-layer LLM + 4-layer CLIP-shaped tower at 168 px/14 (12x12 grid), random weights",
        tower=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                   image_size=168, patch_size=14, hidden_act="quick_gelu"),
        llm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=512, tie_word_embeddings=False),
        delta_layers="1,2,3",
        text_tokens=8,
        caption_tokens=4,
        batch_sizes=(1, 2),
        short_new_tokens=2,
        long_new_tokens=6,
        train_batch=2,
        warmup=0,
        repeats=1,
        long_repeats=1,
        train_steps=1,
        lora_r=4,
        lora_alpha=8,
        threads=1,  # tiny ops: one thread avoids thread-pool stalls on a busy CI machine
        isolate=False,  # one process keeps the CI run short; tests cover isolation separately
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown benchmark preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
