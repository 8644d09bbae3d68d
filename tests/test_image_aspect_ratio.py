"""``image_aspect_ratio == "pad"`` reaches the pixels at every place that preprocesses images:
training samples, the eval runners, ``run_llava`` and the serving model.

The padded reference is built by hand (LLaVA-1.5's rule: paste the image centred on a square of the
processor's mean colour, then preprocess), independently of ``mm_utils.expand2square``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from llava.conversation import conv_templates
from llava.eval import run_llava, runner
from llava.mm_utils import process_images
from llava.serve.inference import ChatModel
from llava.train.arguments import DataArguments
from llava.train.train import make_supervised_data_module
from tests.conftest import tiny_llava_config, tiny_llava_model

WIDE = (80, 40)  # width x height: not square, so padding and centre-cropping give different pixels


@pytest.fixture(scope="module")
def wide_image(tmp_path_factory):
    """A random 80 x 40 RGB image saved as PNG (lossless), and its path."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(WIDE[1], WIDE[0], 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("aspect") / "wide.png"
    Image.fromarray(pixels).save(path)
    return Image.open(path).convert("RGB"), str(path)


@pytest.fixture(scope="module")
def processor(tower_dir):
    return CLIPImageProcessor.from_pretrained(tower_dir)


@pytest.fixture(scope="module")
def padded(wide_image, processor):
    """[3, S, S]: the wide image pasted at the vertical centre of an 80 x 80 mean-colour square."""
    image, _ = wide_image
    fill = tuple(int(m * 255) for m in processor.image_mean)
    square = Image.new("RGB", (80, 80), fill)
    square.paste(image, (0, (80 - 40) // 2))
    return processor.preprocess(square, return_tensors="pt")["pixel_values"][0]


@pytest.fixture(scope="module")
def squared(wide_image, processor):
    """[3, S, S]: the processor alone (resize and centre crop)."""
    return processor.preprocess(wide_image[0], return_tensors="pt")["pixel_values"][0]


@pytest.fixture(scope="module")
def pad_model(tower_dir, llama_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    return tokenizer, tiny_llava_model(tiny_llava_config(tower_dir, tokenizer, image_aspect_ratio="pad"))


def check_padded(pixels: torch.Tensor, padded: torch.Tensor, squared: torch.Tensor) -> None:
    assert pixels.shape == padded.shape
    torch.testing.assert_close(pixels, padded, rtol=0, atol=0)
    assert not torch.allclose(pixels, squared)


def test_process_images_pads_as_llava_1_5(wide_image, processor, padded, squared):
    check_padded(process_images([wide_image[0]], processor, {"image_aspect_ratio": "pad"})[0], padded, squared)
    torch.testing.assert_close(process_images([wide_image[0]], processor, {"image_aspect_ratio": "square"})[0],
                               squared, rtol=0, atol=0)


def test_training_dataset_pads(wide_image, processor, padded, squared, llama_tokenizer):
    """From ``--image_aspect_ratio pad`` through the training data module to a sample's pixels."""
    _, path = wide_image
    sample = {"id": "wide", "image": "wide.png",
              "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Noise."}]}
    data_args = DataArguments(image_folder=path.rsplit("/", 1)[0], image_aspect_ratio="pad")
    module = make_supervised_data_module(llama_tokenizer, data_args, samples=[(0, sample)],
                                         conv=conv_templates["vicuna_v1"], num_image_tokens=16, model_max_length=256,
                                         image_processor=processor, mm_use_im_start_end=False, version="v1")
    dataset = module["train_dataset"]
    check_padded(dataset.load_image(0), padded, squared)
    check_padded(dataset[0]["image"], padded, squared)


def test_eval_runner_pads(wide_image, processor, padded, squared, pad_model, tmp_path):
    tokenizer, model = pad_model
    loaded = runner.LoadedModel(tokenizer, model, processor, "llava-tiny", "vicuna_v1")
    items = [runner.Item(fields={"question_id": 0, "prompt": "What is it?"}, prompt="<image>\nWhat is it?",
                         image_file=wide_image[1])]
    args = argparse.Namespace(answers_file=str(tmp_path / "answers.jsonl"), batch_size=1, resume=False, num_workers=0,
                              temperature=0.0, top_p=None, num_beams=1, max_new_tokens=1)
    seen = []

    def record(batch, pixels, sizes):
        seen.extend(pixels)
        return ["x"] * len(batch)

    runner.run_items(items, loaded, args, generate_fn=record)
    assert len(seen) == 1
    check_padded(seen[0], padded, squared)


def test_run_llava_pads(wide_image, processor, padded, squared, pad_model, monkeypatch):
    tokenizer, model = pad_model
    loaded = runner.LoadedModel(tokenizer, model, processor, "llava-tiny", "vicuna_v1")
    seen = []
    real = run_llava.generate_texts

    def record(model, tokenizer, prompts, images, sizes, settings, stop):
        seen.extend(images)
        return real(model, tokenizer, prompts, images, sizes, settings, stop)

    monkeypatch.setattr(run_llava, "generate_texts", record)
    args = run_llava.build_parser().parse_args(["--model-path", "unused", "--image-file", wide_image[1],
                                                "--query", "What is it?", "--temperature", "0",
                                                "--max_new_tokens", "1"])
    run_llava.eval_model(args, loaded)
    assert len(seen) == 1 and seen[0].shape == (1, 3, 56, 56)
    check_padded(seen[0][0], padded, squared)


def test_serving_model_pads(wide_image, processor, padded, squared, pad_model):
    tokenizer, model = pad_model
    chat = ChatModel(tokenizer, model, processor, 512, "llava-tiny", conv_mode="vicuna_v1")
    prepared = chat.prepare("USER: <image>\nWhat is it? ASSISTANT:", [wide_image[0]])
    assert prepared.images.shape == (1, 3, 56, 56)
    check_padded(prepared.images[0], padded, squared)
