"""The model worker over real HTTP: upstream's stream format, specific errors, queueing."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from PIL import Image

from tests.serve.conftest import stream_chunks, worker_payload


def _png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_worker_streams_a_reply(worker_server, chat_model):
    payload = worker_payload(chat_model)
    chunks = stream_chunks(worker_server.url + "/worker_generate_stream", payload)
    assert len(chunks) >= 2 and all(c["error_code"] == 0 for c in chunks)
    texts = [c["text"] for c in chunks]
    # upstream's semantics: each chunk's text is the prompt plus the answer so far
    assert all(t.startswith(payload["prompt"]) for t in texts)
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert texts[-1][len(payload["prompt"]):].strip()
    assert chunks[-1]["visual_tokens"] == 4 and chunks[-1]["projector"] == "delta"
    status = requests.post(worker_server.url + "/worker_get_status", timeout=10).json()
    assert status["model_names"] == [chat_model.model_name] and status["conv_mode"] == "vicuna_v1"
    assert status["queue_length"] == 0 and status["speed"] == 1


def test_bad_requests_get_specific_errors_then_a_good_one_works(worker_server, chat_model):
    url = worker_server.url + "/worker_generate_stream"
    good = worker_payload(chat_model)
    cases = [
        ({**good, "images": [base64.b64encode(b"just some text").decode()]}, "The uploaded file is not an image"),
        (worker_payload(chat_model, images=2) | {"images": good["images"]},
         "Number of images does not match number of <image> tokens in prompt: 2 tags, 1 image"),
        ({**good, "prompt": good["prompt"].replace("What", "word " * 600)}, "Prompt too long:"),
        ({**good, "prompt": ""}, "no prompt"),
        ({**good, "temperature": "hot"}, "temperature must be a number"),
        (b"{not json", "not a JSON object"),
    ]
    for payload, message in cases:
        chunks = stream_chunks(url, payload)
        assert len(chunks) == 1 and chunks[0]["error_code"] == 1, (message, chunks)
        assert message in chunks[0]["text"]
    # a huge image is shrunk as upstream's demo does, and answered
    huge = {**good, "images": [_png_b64(Image.new("RGB", (3000, 2000), "green"))]}
    assert stream_chunks(url, huge)[-1]["error_code"] == 0
    assert stream_chunks(url, good)[-1]["error_code"] == 0


def test_requests_beyond_the_concurrency_limit_wait_and_all_answer(worker_server, chat_model):
    assert worker_server.worker.limit_model_concurrency == 2
    payload = worker_payload(chat_model, max_new_tokens=8)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: stream_chunks(worker_server.url + "/worker_generate_stream", payload),
                                range(8)))
    assert all(r and r[-1]["error_code"] == 0 and r[-1]["text"] != payload["prompt"] for r in results)
    deadline = time.monotonic() + 5  # the last request releases its slot just after its last chunk
    while worker_server.worker.get_queue_length() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker_server.worker.get_queue_length() == 0


def test_infinite_max_new_tokens_a_stop_list_and_images_not_a_list_are_parameter_errors(worker_server, chat_model):
    good = worker_payload(chat_model)
    cases = [
        (json.dumps({**good, "max_new_tokens": float("inf")}), "max_new_tokens must be a finite number, got inf"),
        (json.dumps(good).replace('"max_new_tokens": 6', '"max_new_tokens": 1e400'),
         "max_new_tokens must be a finite number, got inf"),
        ({**good, "stop": ["</s>"]}, "stop must be a string, got list ['</s>']"),
        ({**good, "images": {"0": good["images"][0]}},
         "'images' must be a list of base64-encoded image files, got a dict"),
    ]
    for payload, message in cases:
        chunks = stream_chunks(worker_server.url + "/worker_generate_stream", payload)
        assert chunks == [{"text": message, "error_code": 1}]
