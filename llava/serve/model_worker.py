"""A model worker: one loaded checkpoint behind upstream LLaVA's worker HTTP API.

Endpoints (upstream's):

* ``POST /worker_generate_stream``: JSON ``{"model", "prompt", "images": [base64, ...],
  "temperature", "top_p", "max_new_tokens", "stop"}``; streams ``\\0``-separated JSON chunks
  ``{"text": prompt + answer so far, "error_code": 0}``. A bad request gets one chunk
  ``{"text": "<what is wrong>", "error_code": 1}`` (upstream sends a generic "NETWORK ERROR"
  text instead), and the worker keeps serving. Chunks also carry ``visual_tokens``,
  ``projector`` and ``time_to_first_token``, which upstream clients ignore.
* ``POST /worker_get_status``: ``{"model_names", "speed", "queue_length"}`` plus ``conv_mode``
  (the checkpoint's template, so a web server never guesses it from the name).

At most ``--limit-model-concurrency`` requests generate at once; the others wait their turn
(they are not refused). The worker registers with the controller and sends heart beats unless
``--no-register``.

    python -m llava.serve.model_worker --controller-address http://localhost:21001 \\
        --port 21002 --worker-address http://localhost:21002 --model-path CKPT --device cpu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import uuid

import requests
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from llava.constants import WORKER_HEART_BEAT_INTERVAL
from llava.serve.inference import ChatModel
from llava.utils import default_device, end_process

logger = logging.getLogger(__name__)

#: Seconds to wait for the controller on each registration / heart-beat request.
CONTROLLER_TIMEOUT = 5.0
#: Heart-beat attempts before giving up until the next interval (upstream retries forever).
HEART_BEAT_ATTEMPTS = 3


def encode_chunk(chunk: dict) -> bytes:
    """One stream chunk on the wire: JSON then a NUL byte, as upstream."""
    return json.dumps(chunk).encode() + b"\0"


class ModelWorker:
    """Serves one ChatModel and keeps the controller informed.

    Args:
        chat: the loaded model.
        worker_addr: the URL the controller and web servers reach this worker at.
        controller_addr: the controller's URL; None runs stand-alone (``--no-register``).
        limit_model_concurrency: requests generating at once; more wait in line.
        worker_id: a short id for logs.
    """

    def __init__(self, chat: ChatModel, worker_addr: str, controller_addr: str | None = None,
                 limit_model_concurrency: int = 5, worker_id: str | None = None,
                 heart_beat_interval: float = WORKER_HEART_BEAT_INTERVAL):
        if limit_model_concurrency < 1:
            raise ValueError(f"limit_model_concurrency must be >= 1, got {limit_model_concurrency}")
        self.chat = chat
        self.model_name = chat.model_name
        self.worker_addr = worker_addr.rstrip("/")
        self.controller_addr = controller_addr.rstrip("/") if controller_addr else None
        self.limit_model_concurrency = limit_model_concurrency
        self.worker_id = worker_id or uuid.uuid4().hex[:6]
        self.heart_beat_interval = heart_beat_interval
        self.waiting = 0
        self.running = 0
        self._stop = threading.Event()
        self._heart_beat_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ status

    def get_queue_length(self) -> int:
        """Requests generating plus requests waiting (upstream: limit - semaphore value + waiters)."""
        return self.running + self.waiting

    def get_status(self) -> dict:
        return {"model_names": [self.model_name], "speed": 1, "queue_length": self.get_queue_length(),
                **self.chat.status()}

    # ------------------------------------------------------------------ controller

    def register_to_controller(self) -> None:
        """Registers with the controller.

        Raises:
            RuntimeError: the controller cannot be reached or refuses (says which and why).
        """
        url = f"{self.controller_addr}/register_worker"
        data = {"worker_name": self.worker_addr, "check_heart_beat": True, "worker_status": self.get_status()}
        try:
            response = requests.post(url, json=data, timeout=CONTROLLER_TIMEOUT)
        except requests.RequestException as err:
            raise RuntimeError(f"Cannot register worker {self.worker_addr}: controller {self.controller_addr} "
                               f"is unreachable: {err}") from err
        if response.status_code != 200:
            raise RuntimeError(f"Controller {self.controller_addr} refused worker {self.worker_addr}: "
                               f"HTTP {response.status_code} {response.text[:200]}")
        logger.info("Registered %s (%s) with controller %s", self.worker_addr, self.model_name, self.controller_addr)

    def send_heart_beat(self) -> bool:
        """Reports the queue length; re-registers when the controller has forgotten this worker.

        Returns:
            Whether the controller answered.
        """
        if not self.controller_addr:
            return False
        url = f"{self.controller_addr}/receive_heart_beat"
        for attempt in range(HEART_BEAT_ATTEMPTS):
            try:
                response = requests.post(url, json={"worker_name": self.worker_addr,
                                                    "queue_length": self.get_queue_length()},
                                         timeout=CONTROLLER_TIMEOUT)
                exist = response.json()["exist"]
                break
            except (requests.RequestException, ValueError, KeyError) as err:
                logger.warning("Heart beat to %s failed (attempt %d/%d): %s", url, attempt + 1,
                               HEART_BEAT_ATTEMPTS, err)
                if self._stop.wait(1.0):
                    return False
        else:
            return False
        if not exist:
            try:
                self.register_to_controller()
            except RuntimeError as err:
                logger.warning("%s", err)
        return True

    def notify_controller(self) -> None:
        """A heart beat in the background (queue length changed); never blocks a request."""
        if self.controller_addr:
            threading.Thread(target=self.send_heart_beat, daemon=True).start()

    def start_heart_beat(self) -> None:
        """Registers, then sends a heart beat every ``heart_beat_interval`` seconds until ``stop``."""
        if not self.controller_addr:
            return
        self.register_to_controller()

        def loop() -> None:
            while not self._stop.wait(self.heart_beat_interval):
                self.send_heart_beat()

        self._heart_beat_thread = threading.Thread(target=loop, name="worker-heart-beat", daemon=True)
        self._heart_beat_thread.start()

    def stop(self) -> None:
        self._stop.set()


def create_app(worker: ModelWorker) -> FastAPI:
    """The worker's FastAPI app (upstream's endpoints); ``app.state.worker`` is the worker."""
    app = FastAPI(title=f"LLaVA model worker ({worker.model_name})")
    app.state.worker = worker
    semaphore = asyncio.Semaphore(worker.limit_model_concurrency)

    @app.post("/worker_generate_stream")
    async def worker_generate_stream(request: Request):
        try:
            params = await request.json()
            if not isinstance(params, dict):
                raise ValueError(f"expected a JSON object, got {type(params).__name__}")
        except ValueError as err:
            return StreamingResponse(iter([encode_chunk({"text": f"The request body is not a JSON object: {err}",
                                                          "error_code": 1})]))
        worker.waiting += 1
        try:
            await semaphore.acquire()  # beyond the limit, requests wait here instead of failing
        finally:
            worker.waiting -= 1
        worker.running += 1
        worker.notify_controller()
        cancel = threading.Event()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                cancel.set()  # a client that went away stops its generation
                worker.running -= 1
                semaphore.release()
                worker.notify_controller()

        def chunks():
            for chunk in worker.chat.worker_stream(params, cancel=cancel):
                yield encode_chunk(chunk)

        async def body():
            try:
                async for data in iterate_in_threadpool(chunks()):
                    yield data
            finally:
                release()

        return StreamingResponse(body())

    @app.post("/worker_get_status")
    async def worker_get_status():
        return worker.get_status()

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA model worker (upstream's HTTP API).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (upstream: localhost)")
    parser.add_argument("--port", type=int, default=21002)
    parser.add_argument("--worker-address", default=None,
                        help="URL others reach this worker at (default http://localhost:PORT)")
    parser.add_argument("--controller-address", default="http://localhost:21001")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--model-name", default=None, help="name clients ask for (default: from the path)")
    parser.add_argument("--conv-mode", default=None, help="template (default: the checkpoint config's conv_mode)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, mps (default: cuda, else mps, else cpu)")
    parser.add_argument("--multi-modal", action="store_true", help="ignored: detected from the checkpoint's config")
    parser.add_argument("--limit-model-concurrency", type=int, default=5)
    parser.add_argument("--stream-interval", type=int, default=1, help="accepted for upstream compatibility")
    parser.add_argument("--no-register", action="store_true")
    parser.add_argument("--load-8bit", action="store_true")
    parser.add_argument("--load-4bit", action="store_true")
    parser.add_argument("--use-flash-attn", action="store_true",
                        help="flash-attention 2 when flash_attn imports on CUDA, else SDPA (with a warning)")
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    chat = ChatModel.from_pretrained(args.model_path, args.model_base, args.model_name, args.load_8bit,
                                     args.load_4bit, device=args.device or default_device(),
                                     conv_mode=args.conv_mode, use_flash_attn=args.use_flash_attn)
    worker = ModelWorker(chat, args.worker_address or f"http://localhost:{args.port}",
                         None if args.no_register else args.controller_address, args.limit_model_concurrency)
    worker.start_heart_beat()
    uvicorn.run(create_app(worker), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
    end_process(0)  # stopped cleanly: skip the C++ teardown that could abort a generate thread (llava.utils)
