"""The controller: knows which workers serve which models and hands out worker addresses.

Upstream LLaVA's endpoints and behaviour: ``/register_worker``, ``/refresh_all_workers``,
``/list_models``, ``/get_worker_address`` (dispatch ``lottery`` by speed or ``shortest_queue``),
``/receive_heart_beat`` (workers silent for ``CONTROLLER_HEART_BEAT_EXPIRATION`` seconds are
dropped), ``/worker_get_status`` and a ``/worker_generate_stream`` proxy so the controller can
stand in for a worker. Differs from upstream on purpose: proxy failures say which worker failed
and how ("Worker http://... for model X is unreachable: <reason>") instead of a generic network
error, and a request for a model nobody serves stops there (upstream went on to post to "").

    python -m llava.serve.controller --host 127.0.0.1 --port 21001
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from llava.constants import CONTROLLER_HEART_BEAT_EXPIRATION

logger = logging.getLogger(__name__)

#: Error codes in proxied streams (upstream's): 1 = bad request (as the worker's), 2 = no worker
#: for the model, 3 = worker failed.
ERROR_BAD_REQUEST = 1
ERROR_NO_WORKER = 2
ERROR_WORKER_FAILED = 3
#: Seconds to connect to a worker; reading allows for queued requests and slow first tokens.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 600.0


class DispatchMethod(enum.Enum):
    LOTTERY = enum.auto()
    SHORTEST_QUEUE = enum.auto()

    @classmethod
    def from_str(cls, name: str) -> "DispatchMethod":
        names = {"lottery": cls.LOTTERY, "shortest_queue": cls.SHORTEST_QUEUE}
        if name not in names:
            raise ValueError(f"Invalid dispatch method {name!r}; known: {sorted(names)}")
        return names[name]


@dataclasses.dataclass
class WorkerInfo:
    model_names: list[str]
    speed: float
    queue_length: int
    check_heart_beat: bool
    last_heart_beat: float


def _chunk(text: str, error_code: int) -> bytes:
    return json.dumps({"text": text, "error_code": error_code}).encode() + b"\0"


class Controller:
    """The worker registry. Thread-safe: endpoints and the expiration thread share it.

    Args:
        dispatch_method: "lottery" (random, weighted by speed) or "shortest_queue".
        heart_beat_expiration: seconds after which a silent worker is dropped.
    """

    def __init__(self, dispatch_method: str = "shortest_queue",
                 heart_beat_expiration: float = CONTROLLER_HEART_BEAT_EXPIRATION, seed: int | None = None):
        self.dispatch_method = DispatchMethod.from_str(dispatch_method)
        self.heart_beat_expiration = heart_beat_expiration
        self.worker_info: dict[str, WorkerInfo] = {}
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()

    # ------------------------------------------------------------------ registry

    def register_worker(self, worker_name: str, check_heart_beat: bool, worker_status: dict | None) -> bool:
        """Adds or updates a worker; without a status, asks the worker for it. Returns success."""
        worker_status = worker_status or self.get_worker_status(worker_name)
        if not worker_status:
            return False
        try:
            info = WorkerInfo(list(worker_status["model_names"]), float(worker_status.get("speed", 1)),
                              int(worker_status.get("queue_length", 0)), bool(check_heart_beat), time.time())
        except (KeyError, TypeError, ValueError) as err:
            logger.error("Worker %s sent an unusable status %r: %s", worker_name, worker_status, err)
            return False
        with self._lock:
            known = worker_name in self.worker_info
            self.worker_info[worker_name] = info
        logger.info("Register %s worker %s: %s", "an existing" if known else "a new", worker_name, worker_status)
        return True

    def get_worker_status(self, worker_name: str) -> dict | None:
        try:
            response = requests.post(worker_name + "/worker_get_status", timeout=CONNECT_TIMEOUT)
        except requests.RequestException as err:
            logger.error("Get status of %s failed: %s", worker_name, err)
            return None
        if response.status_code != 200:
            logger.error("Get status of %s failed: HTTP %d", worker_name, response.status_code)
            return None
        try:
            return response.json()
        except ValueError:
            logger.error("Get status of %s failed: the answer is not JSON: %r", worker_name, response.text[:100])
            return None

    def remove_worker(self, worker_name: str) -> None:
        with self._lock:
            self.worker_info.pop(worker_name, None)

    def refresh_all_workers(self) -> None:
        """Re-reads every worker's status; workers that do not answer are dropped.

        Differs from upstream on purpose: upstream emptied the registry while it polled, so requests
        during a refresh found no worker. Here each worker keeps its entry until its own answer
        updates it, or its silence drops it (unless it registered again meanwhile).
        """
        with self._lock:
            polled = dict(self.worker_info)
        if not polled:
            return
        # All at once: a refresh takes one worker's time-out at most, however many are slow.
        with ThreadPoolExecutor(max_workers=min(32, len(polled))) as pool:
            answered = list(pool.map(lambda item: self.register_worker(item[0], item[1].check_heart_beat, None),
                                     polled.items()))
        for (name, info), ok in zip(polled.items(), answered):
            if ok:
                continue
            with self._lock:
                if self.worker_info.get(name) is info:
                    del self.worker_info[name]
            logger.info("Remove stale worker: %s", name)

    def list_models(self) -> list[str]:
        with self._lock:
            return sorted({m for info in self.worker_info.values() for m in info.model_names})

    def get_worker_address(self, model_name: str) -> str:
        """A worker serving ``model_name`` per the dispatch method; "" when none does."""
        with self._lock:
            names = [n for n, info in self.worker_info.items() if model_name in info.model_names]
            if not names:
                return ""
            if self.dispatch_method == DispatchMethod.LOTTERY:
                speeds = np.array([self.worker_info[n].speed for n in names], dtype=np.float64)
                if speeds.sum() < 1e-4:
                    return ""
                return names[int(self._rng.choice(len(names), p=speeds / speeds.sum()))]
            queues = [self.worker_info[n].queue_length / max(self.worker_info[n].speed, 1e-4) for n in names]
            name = names[int(np.argmin(queues))]
            self.worker_info[name].queue_length += 1  # as upstream: until the next heart beat says otherwise
            return name

    def receive_heart_beat(self, worker_name: str, queue_length: int) -> bool:
        with self._lock:
            info = self.worker_info.get(worker_name)
            if info is None:
                logger.info("Heart beat from unknown worker %s", worker_name)
                return False
            info.queue_length = int(queue_length)
            info.last_heart_beat = time.time()
        return True

    def remove_stale_workers_by_expiration(self) -> list[str]:
        """Drops workers whose last heart beat is older than the expiration; returns their names."""
        expire = time.time() - self.heart_beat_expiration
        with self._lock:
            stale = [n for n, info in self.worker_info.items() if info.check_heart_beat and info.last_heart_beat < expire]
            for name in stale:
                del self.worker_info[name]
        for name in stale:
            logger.info("Remove worker %s: no heart beat for %.0f s", name, self.heart_beat_expiration)
        return stale

    def start_expiration_thread(self) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(self.heart_beat_expiration):
                self.remove_stale_workers_by_expiration()

        thread = threading.Thread(target=loop, name="controller-expiration", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ acting as a worker

    def worker_api_generate_stream(self, params: dict):
        """Proxies ``/worker_generate_stream`` to a worker serving ``params["model"]``.

        Yields:
            The worker's chunks; on failure one more chunk with error_code 2 (no worker) or 3
            (the worker is unreachable or stopped mid-answer) naming the worker and the reason.
        """
        model = params.get("model")
        worker_addr = self.get_worker_address(model) if isinstance(model, str) else ""
        if not worker_addr:
            yield _chunk(f"No worker serves model {model!r}; models available: {self.list_models()}", ERROR_NO_WORKER)
            return
        received = False
        try:
            with requests.post(worker_addr + "/worker_generate_stream", json=params, stream=True,
                               timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as response:
                if response.status_code != 200:
                    yield _chunk(f"Worker {worker_addr} for model {model} answered HTTP {response.status_code}: "
                                 f"{response.text[:200]}", ERROR_WORKER_FAILED)
                    return
                for chunk in response.iter_lines(decode_unicode=False, delimiter=b"\0"):
                    if chunk:
                        received = True
                        yield chunk + b"\0"
        except requests.RequestException as err:
            what = "stopped mid-answer" if received else "is unreachable"
            logger.error("Worker %s for model %s %s: %s", worker_addr, model, what, err)
            yield _chunk(f"Worker {worker_addr} for model {model} {what}: {err}", ERROR_WORKER_FAILED)
            return
        if not received:
            yield _chunk(f"Worker {worker_addr} for model {model} closed the stream without answering",
                         ERROR_WORKER_FAILED)

    def worker_api_get_status(self) -> dict:
        """Sums the workers' statuses, so the controller can register with another controller."""
        with self._lock:
            names = list(self.worker_info)
        model_names, speed, queue_length = set(), 0.0, 0
        for name in names:
            status = self.get_worker_status(name)
            if status is not None:
                model_names.update(status["model_names"])
                speed += status.get("speed", 1)
                queue_length += status.get("queue_length", 0)
        return {"model_names": sorted(model_names), "speed": speed, "queue_length": queue_length}


async def _json_object(request: Request, *required: str) -> dict:
    """The request's JSON object, with a string under each of ``required``.

    Raises:
        ValueError: the body is not a JSON object or lacks a required field; the message says which.
    """
    try:
        data = await request.json()
    except ValueError as err:
        raise ValueError(f"The request body is not a JSON object: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"The request body is not a JSON object: expected a JSON object, got {type(data).__name__}")
    for key in required:
        if key not in data:
            raise ValueError(f"The request body has no {key!r}")
        if not isinstance(data[key], str):
            raise ValueError(f"{key!r} must be a string, got {data[key]!r}")
    return data


async def _checked_body(request: Request, *required: str) -> dict:
    """``_json_object``, answering HTTP 400 with its message (upstream answered a bare 500)."""
    try:
        return await _json_object(request, *required)
    except ValueError as err:
        raise HTTPException(status_code=400, detail=str(err)) from err


def create_app(controller: Controller) -> FastAPI:
    """The controller's FastAPI app (upstream's endpoints); ``app.state.controller`` is the registry."""
    app = FastAPI(title="LLaVA controller")
    app.state.controller = controller

    @app.post("/register_worker")
    async def register_worker(request: Request):
        data = await _checked_body(request, "worker_name")
        # Without a status the controller asks the worker for one: in the thread pool, so that a
        # slow worker does not hold up every other request.
        ok = await run_in_threadpool(controller.register_worker, data["worker_name"],
                                     data.get("check_heart_beat", True), data.get("worker_status"))
        return {"registered": ok}

    @app.post("/refresh_all_workers")
    def refresh_all_workers():  # sync: it calls every worker, so it runs in the thread pool
        controller.refresh_all_workers()
        return {"models": controller.list_models()}

    @app.post("/list_models")
    async def list_models():
        return {"models": controller.list_models()}

    @app.post("/get_worker_address")
    async def get_worker_address(request: Request):
        data = await _checked_body(request, "model")
        return {"address": controller.get_worker_address(data["model"])}

    @app.post("/receive_heart_beat")
    async def receive_heart_beat(request: Request):
        data = await _checked_body(request, "worker_name")
        try:
            queue_length = int(data.get("queue_length", 0))
        except (TypeError, ValueError, OverflowError):
            raise HTTPException(status_code=400,
                                detail=f"queue_length must be an integer, got {data['queue_length']!r}") from None
        return {"exist": controller.receive_heart_beat(data["worker_name"], queue_length)}

    @app.post("/worker_generate_stream")
    async def worker_generate_stream(request: Request):
        try:
            params = await _json_object(request)
        except ValueError as err:  # a chunk, as the worker answers it, so stream readers show it
            return StreamingResponse(iter([_chunk(str(err), ERROR_BAD_REQUEST)]))
        return StreamingResponse(controller.worker_api_generate_stream(params))

    @app.post("/worker_get_status")
    def worker_get_status():
        return controller.worker_api_get_status()

    return app


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description="LLaVA controller (upstream's HTTP API).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (upstream: localhost)")
    parser.add_argument("--port", type=int, default=21001)
    parser.add_argument("--dispatch-method", choices=["lottery", "shortest_queue"], default="shortest_queue")
    args = parser.parse_args(argv)
    controller = Controller(args.dispatch_method)
    controller.start_expiration_thread()
    uvicorn.run(create_app(controller), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
