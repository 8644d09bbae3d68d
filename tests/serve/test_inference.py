"""The shared streaming path: answers stream, bad input raises RequestError with a clear message."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from llava.serve import inference
from llava.serve.inference import (
    MAX_IMAGE_SIDE,
    RequestError,
    decode_image,
    encode_image,
    load_image,
    open_image,
)
from tests.serve.conftest import CONV_MODE, draw_image, serve_folder


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


def test_thin_images_keep_at_least_one_pixel(chat_model, tmp_path):
    # Upstream's resize rounded the short side of a 3000x2 image to 0 and PIL refused it.
    assert open_image(_png(Image.new("RGB", (3000, 2), "red"))).size == (MAX_IMAGE_SIDE, 1)
    assert open_image(_png(Image.new("RGB", (2, 5000), "red"))).size == (1, MAX_IMAGE_SIDE)
    chunks = list(chat_model.worker_stream({"prompt": "USER: <image>\nWhat? ASSISTANT:", "max_new_tokens": 2,
                                            "temperature": 0, "images": [encode_image(Image.new("RGB", (3000, 2)))]}))
    assert chunks[-1]["error_code"] == 0, chunks
    # an image that fails while being preprocessed is a RequestError too, not a raw PIL error
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_png(draw_image())[:200])
    prompt, _ = _prompt(chat_model)
    with pytest.raises(RequestError, match=r"Cannot preprocess the images \(sizes 64x48\): OSError: "):
        list(chat_model.stream(prompt, [Image.open(truncated)], max_new_tokens=2))


def test_stream_updates_only_grow_when_a_piece_ends_like_the_stop_string(chat_model):
    prompt, _ = _prompt(chat_model, "Hello there friend")
    answer = chat_model.generate_text(prompt, temperature=0, max_new_tokens=12).text
    assert len(answer) >= 8
    for start in range(1, 6):  # stop strings from inside the answer, so some piece ends partway into one
        stop = answer[start:start + 3]
        updates = list(chat_model.stream(prompt, temperature=0, max_new_tokens=12, stop=stop))
        texts = [u.text for u in updates]
        assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:])), (stop, texts)
        assert texts[-1] == answer[:answer.index(stop)].strip()


def test_load_image_reads_paths_and_urls(tmp_path):
    draw_image().save(tmp_path / "circle.png")
    with serve_folder(tmp_path) as url:
        assert load_image(f"{url}/circle.png").size == (64, 48)
        with pytest.raises(RequestError, match=f"cannot download {url}/gone.png: 404 Client Error"):
            load_image(f"{url}/gone.png")
    with pytest.raises(RequestError, match=r"cannot download http://example\.invalid/x\.png: "):
        load_image("http://example.invalid/x.png")
    assert load_image(tmp_path / "circle.png").size == (64, 48)
    with pytest.raises(RequestError, match=f"cannot read {tmp_path}/missing.png: No such file or directory"):
        load_image(tmp_path / "missing.png")


def test_an_interrupt_just_after_generation_starts_still_stops_and_joins_it(chat_model, monkeypatch):
    """Ctrl-C / SIGTERM can land right after the generate thread starts; the process must not exit
    with that thread inside torch (it aborts: "terminate called without an active exception")."""
    started = []

    class InterruptedAfterStart(threading.Thread):
        def start(self):
            super().start()
            started.append(self)
            raise KeyboardInterrupt

    monkeypatch.setattr(inference.threading, "Thread", InterruptedAfterStart)
    prompt, _ = _prompt(chat_model)
    with pytest.raises(KeyboardInterrupt):
        list(chat_model.stream(prompt, [draw_image()], temperature=0, max_new_tokens=200))
    assert len(started) == 1 and not started[0].is_alive()
