"""Serving fixtures: one tiny checkpoint on disk, loaded once, and servers on free 127.0.0.1 ports."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import uvicorn
from PIL import Image, ImageDraw
from transformers import AutoTokenizer

from llava.serve.inference import ChatModel
from tests.conftest import make_tower, tiny_llava_config, tiny_llava_model
from tests.tokenizers import make_llama_tokenizer

#: The prompt template the tiny checkpoint records in its config (the test tokenizer is Llama's).
CONV_MODE = "vicuna_v1"


@pytest.fixture(scope="package", autouse=True)
def temp_files_under_pytest(tmp_path_factory):
    """gradio_client stages each downloaded file in a new folder of the temp dir and leaves the
    folder behind; point the temp dir at pytest's own, which it prunes, while these tests run."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tmp"))
    yield
    tempfile.tempdir = saved


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """Runs an ASGI app with uvicorn in a daemon thread on a free 127.0.0.1 port (a context manager)."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder):
    """Serves ``folder`` over HTTP on a free 127.0.0.1 port; yields its base URL (for image URLs)."""
    handler = functools.partial(_QuietFileHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(10)


def draw_image(size=(64, 48), color="red") -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4), fill=color)
    return image


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A full LLaVA checkpoint folder (delta projector, Llama tokenizer, conv_mode in config.json)."""
    root = tmp_path_factory.mktemp("serve")
    tower = make_tower(root / "tower", hidden_size=64)  # the delta block needs >= 64 channels
    tokenizer = AutoTokenizer.from_pretrained(make_llama_tokenizer(root / "tokenizer"))
    config = tiny_llava_config(tower, tokenizer, projector="delta", conv_mode=CONV_MODE, image_aspect_ratio="pad")
    model = tiny_llava_model(config)
    with torch.no_grad():
        # Random weights favour byte-fallback pieces, which decode to "\ufffd"; zero their logits
        # (and BOS/UNK/EOS) so greedy answers are readable words and always run max_new_tokens.
        for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            if piece.startswith("<0x") or piece in ("<unk>", "<s>", "</s>"):
                model.lm_head.weight[i] = 0
    folder = root / "llava-tiny-delta"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def chat_model(tiny_checkpoint) -> ChatModel:
    return ChatModel.from_pretrained(tiny_checkpoint, device="cpu")


@pytest.fixture()
def image_file(tmp_path) -> Path:
    path = tmp_path / "circle.png"
    draw_image().save(path)
    return path


def stream_chunks(url: str, payload, timeout: float = 120) -> list[dict]:
    """POSTs to a ``/worker_generate_stream`` URL and returns the parsed ``\\0``-separated chunks."""
    import json

    import requests

    kwargs = {"data": payload} if isinstance(payload, (bytes, str)) else {"json": payload}
    with requests.post(url, stream=True, timeout=timeout, **kwargs) as response:
        assert response.status_code == 200, response.text
        return [json.loads(c) for c in response.iter_lines(delimiter=b"\0") if c]


def worker_payload(chat, text: str = "What is in the image?", images: int = 1, **overrides) -> dict:
    """An upstream-style worker request: the prompt rendered by the checkpoint's template."""
    from llava.serve.inference import encode_image

    conv = chat.new_conversation()
    conv.append_message(conv.roles[0], "<image>\n" * images + text)
    conv.append_message(conv.roles[1], None)
    payload = {"model": chat.model_name, "prompt": conv.get_prompt(), "images": [encode_image(draw_image())] * images,
               "temperature": 0, "top_p": 0.7, "max_new_tokens": 6, "stop": conv.stop_str}
    payload.update(overrides)
    return payload


@pytest.fixture(scope="session")
def worker_server(chat_model):
    """A model worker over the tiny checkpoint, not registered anywhere, at most 2 requests at once."""
    from llava.serve.model_worker import ModelWorker, create_app

    worker = ModelWorker(chat_model, "http://unset", controller_addr=None, limit_model_concurrency=2)
    with ServerThread(create_app(worker)) as server:
        worker.worker_addr = server.url
        server.worker = worker
        yield server


class DyingWorker:
    """A fake worker that streams one good chunk, then drops the connection (a crash mid-answer)."""

    def __init__(self, prefix: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import json

        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                prompt = json.loads(body or b"{}").get("prompt", "")
                chunk = json.dumps({"text": prompt + "The answer starts", "error_code": 0}).encode() + b"\0"
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                # no terminating zero-length chunk: the worker "died"

    def __enter__(self) -> "DyingWorker":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()
