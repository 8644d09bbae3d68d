"""Helpers for the eval tests: tiny fixture files in the real formats, written to tmp_path."""

import json

import pytest


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def answer(question_id, text, prompt="", **extra):
    """One line of a LLaVA answer file."""
    return {"question_id": question_id, "prompt": prompt, "text": text, "answer_id": "x",
            "model_id": "llava-test", "metadata": {}, **extra}


@pytest.fixture
def jsonl():
    return write_jsonl


@pytest.fixture
def json_file():
    return write_json


# ----------------------------------------------------------------------------- model runners
# A tiny random LLaVA checkpoint saved like a real one (weights + config + tokenizer), and a
# few generated images, shared by tests/eval/test_runners.py and test_eval_scripts.py.


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tower_dir, llama_tokenizer_dir):
    """A full checkpoint folder named ``llava-tiny-mlp2x``, loadable by load_pretrained_model."""
    from transformers import AutoTokenizer

    from tests.conftest import tiny_llava_config, tiny_llava_model

    tokenizer = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    model = tiny_llava_model(tiny_llava_config(tower_dir, tokenizer, image_aspect_ratio="pad"), seed=0)
    folder = tmp_path_factory.mktemp("checkpoints") / "llava-tiny-mlp2x"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Three small PNGs of different sizes and colours: a.png, b.png, sub/c.png."""
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    for name, size, colour in (("a.png", (40, 30), "red"), ("b.png", (30, 50), "blue"),
                               ("sub/c.png", (56, 56), "green")):
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).rectangle((5, 5, size[0] // 2, size[1] // 2), fill=colour)
        image.save(folder / name)
    return str(folder)
