"""Stage 0 of the quickstart: the vision tower trained on synthetic attribute labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPVisionModel

from llava.data import synthetic
from llava.model.multimodal_encoder.clip_encoder import build_image_processor
from llava.quickstart.stage0 import IGNORE, AttributeClassifier, TowerConfig, evaluate, pretrain_tower, to_pixels

DATA = synthetic.SyntheticConfig(num_stage1=40, num_stage2=40, num_eval=5, image_size=56, seed=3)
TINY = dict(image_size=56, hidden_size=64, num_layers=2, num_heads=2, batch_size=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage0") / "data"
    synthetic.generate(out, DATA)
    return out


def test_stage0_batch_is_reproducible_and_new(data_dir):
    images, labels = synthetic.stage0_batch(10, 6, DATA)
    again, labels_again = synthetic.stage0_batch(10, 6, DATA)
    assert labels == labels_again
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert all(im.size == (56, 56) and im.mode == "RGB" for im in images)
    # the batch is the run of single images, so consecutive batches never repeat an image
    singles = [synthetic.stage0_batch(i, 1, DATA)[0][0] for i in range(10, 16)]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, singles))
    # none of them is one of the dataset's images
    stage0 = json.loads((data_dir / "stage0.json").read_text())
    from PIL import Image
    dataset = {np.asarray(Image.open(data_dir / "images" / s["image"]).convert("RGB")).tobytes()
               for s in stage0["samples"]}
    fresh = {np.asarray(im).tobytes() for im in synthetic.stage0_batch(0, 200, DATA)[0]}
    assert not dataset & fresh
    # every label is a class index of its task, or the ignore index where the kind lacks it
    for row in labels:
        assert set(row) == set(synthetic.QUESTION_TYPES)
        for task, value in row.items():
            assert value == synthetic.IGNORE_LABEL or 0 <= value < len(synthetic.VOCAB[task])


def test_to_pixels_matches_the_image_processor(tmp_path):
    processor = build_image_processor(str(tmp_path), TowerConfig(**TINY).vision_config())
    images, _ = synthetic.stage0_batch(0, 4, DATA)
    expected = processor.preprocess(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(to_pixels(images, processor), expected, rtol=0, atol=1e-6)
    other = [im.resize((70, 70)) for im in images]  # not the tower's size: the processor resizes
    torch.testing.assert_close(to_pixels(other, processor),
                               processor.preprocess(other, return_tensors="pt")["pixel_values"])


def test_classifier_reads_the_select_layer_without_running_the_layers_after_it():
    config = TowerConfig(**dict(TINY, num_layers=3))
    torch.manual_seed(0)
    model = AttributeClassifier(CLIPVisionModel(config.vision_config()), {"color": 5, "shape": 4}, -2)
    assert model.select_layer == 2
    layers = getattr(model.tower, "vision_model", model.tower).encoder.layers
    ran = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, layer in enumerate(layers)]
    pixels = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    logits = model(pixels)
    for hook in hooks:
        hook.remove()
    assert ran == [0, 1]  # the third (last) layer never reaches the loss, so it is not run
    # the same logits as from the full forward's hidden_states[-2], to the bit
    hidden = model.tower(pixels, output_hidden_states=True).hidden_states[-2]
    grid = model.reduce(model.norm(hidden[:, 1:])).flatten(1)
    for name, head in model.heads.items():
        assert torch.equal(logits[name], head(grid))
    sum(v.sum() for v in logits.values()).backward()
    assert all(p.grad is None for p in layers[2].parameters())
    assert all(p.grad is not None for p in layers[1].parameters())


def test_fresh_images_train_a_tower_that_sees(data_dir, tmp_path):
    config = TowerConfig(**TINY, steps=80, lr=2e-3, eval_images=60)
    report = pretrain_tower(data_dir, tmp_path / "tower", config, progress=False)
    assert report["train_images"] == 80 * 32 and report["heldout_images"] == 60
    # position is what this tiny tower learns first: 80 steps lift it well above chance (1/3)
    assert report["heldout_accuracy"]["position"] >= 0.7
    tower = CLIPVisionModel.from_pretrained(tmp_path / "tower")
    assert tower.config.image_size == 56 and tower.config.hidden_size == 64
    assert json.loads((tmp_path / "tower" / "stage0_report.json").read_text())["train_images"] == 2560


def test_dataset_images_mode_and_missing_meta(data_dir, tmp_path):
    config = TowerConfig(**TINY, steps=2, fresh_images=False, holdout=0.25)
    report = pretrain_tower(data_dir, tmp_path / "tower", config, progress=False)
    n = len(json.loads((data_dir / "stage0.json").read_text())["samples"])
    assert report["heldout_images"] == int(n * 0.25) and report["train_images"] == n - int(n * 0.25)
    # fresh images are drawn like the dataset's, from its meta.json; without it, say so
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "stage0.json").write_text((data_dir / "stage0.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"meta\.json.*fresh_images=False"):
        pretrain_tower(bare, tmp_path / "tower2", TowerConfig(**TINY, steps=1), progress=False)


def test_token_heads_make_every_patch_token_name_the_attributes(data_dir, tmp_path):
    tasks = {"color": 5, "position": 3}
    torch.manual_seed(0)
    model = AttributeClassifier(CLIPVisionModel(TowerConfig(**TINY).vision_config()), tasks, -2, token_heads=True)
    pixels = torch.randn(3, 3, 56, 56)
    out = model(pixels)
    assert out["color"].shape == (3, 5) and out["token_position"].shape == (3, 16, 3)  # one per patch token
    assert set(AttributeClassifier(CLIPVisionModel(TowerConfig(**TINY).vision_config()), tasks, -2)(
        pixels[:1])) == set(tasks)  # off by default

    # per-token accuracy: over every token of the images where the attribute is labelled
    labels = torch.tensor([[0, 1], [4, IGNORE], [2, 2]])
    grid, got = evaluate(model, pixels, labels, list(tasks))
    with torch.no_grad():
        out = model(pixels)
    color = (out["token_color"].argmax(-1) == labels[:, :1]).float().mean().item()
    position = (out["token_position"][[0, 2]].argmax(-1) == labels[[0, 2], 1:]).float().mean().item()
    assert got == {"color": round(color, 4), "position": round(position, 4)}
    color = (out["color"].argmax(-1) == labels[:, 0]).float().mean().item()
    position = (out["position"][[0, 2]].argmax(-1) == labels[[0, 2], 1]).float().mean().item()
    assert grid == {"color": round(color, 4), "position": round(position, 4)}  # the grid heads, same pass

    # the heads' loss reaches the tower: same seed and images, different weights
    config = TowerConfig(**TINY, steps=3, eval_images=20, token_heads=1.0)
    report = pretrain_tower(data_dir, tmp_path / "heads", config, progress=False)
    token = report["heldout_token_accuracy"]
    assert set(token) == set(synthetic.QUESTION_TYPES) and all(0.0 <= v <= 1.0 for v in token.values())
    assert report["settings"]["token_heads"] == 1.0
    plain = pretrain_tower(data_dir, tmp_path / "plain", TowerConfig(**TINY, steps=3, eval_images=20),
                           progress=False)
    assert plain["heldout_token_accuracy"] is None and plain["settings"]["token_heads"] == 0.0
    heads_w = load_file(tmp_path / "heads" / "model.safetensors")
    plain_w = load_file(tmp_path / "plain" / "model.safetensors")
    assert heads_w.keys() == plain_w.keys()  # a normal vision-tower folder either way
    assert any(not torch.equal(heads_w[k], plain_w[k]) for k in heads_w)
