"""Stage 0: pretrain a small CLIP-shaped vision tower on the synthetic images.

LLaVA starts from a pretrained CLIP; none can be downloaded here, so the quickstart first teaches
a small ``CLIPVisionModel`` to see colour, shape, position, count and rendered words by
classifying them (one linear head per attribute, fed by the patch tokens of the layer LLaVA reads,
``mm_vision_select_layer``). The tower is then saved as an ordinary local vision-tower folder and
kept frozen by LLaVA's recipe, exactly like CLIP.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.model.multimodal_encoder.clip_encoder import build_image_processor

logger = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class TowerConfig:
    """Tower shape and stage-0 schedule. Defaults fit a 2-core CPU budget (about a minute)."""

    image_size: int = 112
    patch_size: int = 14
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    select_layer: int = -2
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    holdout: float = 0.1
    seed: int = 0

    def vision_config(self) -> CLIPVisionConfig:
        return CLIPVisionConfig(
            hidden_size=self.hidden_size, intermediate_size=4 * self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, image_size=self.image_size, patch_size=self.patch_size)


class AttributeClassifier(nn.Module):
    """Tower + one linear head per attribute reading every patch token of the select layer.

    The heads see the patch grid the way LLaVA's projector will (not a pooled vector), so the
    tower learns to put colour, shape, position, count and letters into its patch tokens.
    """

    def __init__(self, tower: CLIPVisionModel, tasks: dict[str, int], select_layer: int):
        super().__init__()
        self.tower = tower
        self.select_layer = select_layer
        width, side = tower.config.hidden_size, tower.config.image_size // tower.config.patch_size
        self.norm = nn.LayerNorm(width)
        self.reduce = nn.Linear(width, 32)
        self.heads = nn.ModuleDict({name: nn.Linear(32 * side * side, n) for name, n in tasks.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.tower(pixels, output_hidden_states=True).hidden_states[self.select_layer]  # (B, 1+N, C)
        grid = self.reduce(self.norm(hidden[:, 1:])).flatten(1)  # (B, N*32)
        return {name: head(grid) for name, head in self.heads.items()}


def _load_pixels(samples: list[dict], image_root: Path, processor) -> torch.Tensor:
    """All images, preprocessed exactly as LLaVA will feed them to the tower: [N, 3, S, S]."""
    images = [Image.open(image_root / s["image"]).convert("RGB") for s in samples]
    return processor.preprocess(images, return_tensors="pt")["pixel_values"]


def pretrain_tower(data_dir: str | Path, out_dir: str | Path, config: TowerConfig | None = None,
                   progress: bool = True) -> dict:
    """Trains the tower on ``stage0.json`` from :mod:`llava.data.synthetic` and saves it.

    Args:
        data_dir: the synthetic dataset folder (``stage0.json``, ``images/``).
        out_dir: where the tower folder (config, weights, preprocessor) is written.
    Returns:
        A report: held-out accuracy per attribute, seconds, the settings.
    """
    config = config or TowerConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    stage0 = json.loads((data_dir / "stage0.json").read_text())
    tasks = {name: len(classes) for name, classes in stage0["tasks"].items()}
    samples = stage0["samples"]
    image_root = data_dir / stage0.get("image_folder", "images")

    torch.manual_seed(config.seed)
    vision_config = config.vision_config()
    processor = build_image_processor(str(out_dir), vision_config)
    start = time.time()
    pixels = _load_pixels(samples, image_root, processor)
    labels = torch.tensor([[s["labels"][t] for t in tasks] for s in samples])  # (N, T)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(config.seed))
    n_hold = max(1, int(len(samples) * config.holdout))
    hold, train = order[:n_hold], order[n_hold:]

    model = AttributeClassifier(CLIPVisionModel(vision_config), tasks, config.select_layer)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / config.steps))))
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    rng = np.random.default_rng(config.seed)
    model.train()
    bar = tqdm(range(config.steps), desc="stage 0 (vision tower)", disable=not progress, mininterval=2)
    for step in bar:
        batch = train[torch.from_numpy(rng.choice(len(train), size=min(config.batch_size, len(train)),
                                                  replace=False))]
        x = pixels[batch]
        # light augmentation that keeps every label true: brightness jitter
        x = x + 0.1 * torch.randn(len(batch), 1, 1, 1)
        logits = model(x)
        loss = sum(loss_fn(logits[t], labels[batch, i]) for i, t in enumerate(tasks))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")

    accuracy = evaluate(model, pixels[hold], labels[hold], list(tasks))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.tower.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    report = {"heldout_accuracy": accuracy, "seconds": round(time.time() - start, 1), "images": len(samples),
              "settings": asdict(config), "tower": str(out_dir)}
    (out_dir / "stage0_report.json").write_text(json.dumps(report, indent=2))
    return report


@torch.no_grad()
def evaluate(model: AttributeClassifier, pixels: torch.Tensor, labels: torch.Tensor, tasks: list[str]) -> dict:
    """Accuracy per attribute over the images where that attribute is labelled."""
    model.eval()
    logits = {t: [] for t in tasks}
    for i in range(0, len(pixels), 128):
        out = model(pixels[i:i + 128])
        for t in tasks:
            logits[t].append(out[t])
    result = {}
    for i, t in enumerate(tasks):
        pred = torch.cat(logits[t]).argmax(-1)
        mask = labels[:, i] != IGNORE
        result[t] = round((pred[mask] == labels[mask, i]).float().mean().item(), 4) if mask.any() else None
    return result
