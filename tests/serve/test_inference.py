"""The shared streaming path: answers stream, bad input raises RequestError with a clear message."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from llava.serve import inference
from llava.serve.inference import MAX_IMAGE_SIDE, RequestError, decode_image, encode_image, open_image, resolve_conv_mode
from tests.serve.conftest import CONV_MODE, draw_image


def _prompt(chat, text="<image>\nWhat is in the image?"):
    conv = chat.new_conversation()
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt(), conv.stop_str


def test_stream_grows_and_reports_visual_tokens(chat_model):
    assert chat_model.conv_mode == CONV_MODE  # from config.json, not from the folder name
    prompt, stop = _prompt(chat_model)
    updates = list(chat_model.stream(prompt, [draw_image()], temperature=0, max_new_tokens=6, stop=stop))
    assert updates[-1].finished and updates[-1].text
    assert all(later.text.startswith(earlier.text) for earlier, later in zip(updates[:-2], updates[1:-1]))
    # 56 px / patch 14 -> a 4 x 4 grid; delta with scale_factor 2 -> 2 x 2 = 4 visual tokens
    assert updates[-1].visual_tokens == chat_model.visual_tokens_per_image == 4
    assert updates[-1].time_to_first_token > 0


@pytest.mark.parametrize("prompt, images, message", [
    ("<image>\n<image>\nWhat?", 1, "2 tags, 1 image"),
    ("What?", 1, "0 tags, 1 image"),
    ("word " * 600, 0, "Prompt too long"),
])
def test_bad_prompts_raise_request_errors(chat_model, prompt, images, message):
    with pytest.raises(RequestError, match=message):
        list(chat_model.stream(prompt, [draw_image()] * images, max_new_tokens=4))


def test_images_are_checked_and_capped(monkeypatch):
    with pytest.raises(RequestError, match="not an image"):
        open_image(b"%PDF-1.4 not an image", name="notes.pdf")
    with pytest.raises(RequestError, match="not an image"):
        decode_image("!!! not base64 !!!")
    png = io.BytesIO()
    draw_image().save(png, format="PNG")
    with pytest.raises(RequestError, match="not an image"):
        open_image(png.getvalue()[:60])  # truncated
    huge = open_image(_png(Image.new("RGB", (4000, 1000), "blue")))
    assert max(huge.size) <= MAX_IMAGE_SIDE and huge.size[0] > huge.size[1]
    assert decode_image(encode_image(draw_image())).size == (64, 48)
    monkeypatch.setattr(inference, "MAX_IMAGE_PIXELS", 1000)  # refused from the header, before decoding
    with pytest.raises(RequestError, match="Image too large: 64x48 pixels; the limit is 1,000 pixels"):
        open_image(_png(draw_image()))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_conv_mode_comes_from_config_or_flag():
    class Config:
        conv_mode = "chatml"

    assert resolve_conv_mode(Config()) == "chatml"
    assert resolve_conv_mode(Config(), "vicuna_v1") == "vicuna_v1"
    assert resolve_conv_mode(object()) == "vicuna_v1"  # released LLaVA-1.5 configs: the 1.5 template
    with pytest.raises(ValueError, match="Unknown conversation template 'nope'"):
        resolve_conv_mode(Config(), "nope")
