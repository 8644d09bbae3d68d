"""Clients of upstream's serving API: a controller and its model workers, over HTTP.

``ControllerBackend`` asks a controller which worker serves a model and streams the answer from
that worker (the web demo's ``--controller-url`` mode, ``python -m llava.serve.test_message``);
``WorkerBackend`` talks to one worker directly (``test_message --worker-address``). Every failure
names the controller or worker and what went wrong, never a generic network error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator

import requests

from llava.conversation import FALLBACK_CONV_MODE, Conversation, conv_templates
from llava.serve.inference import RequestError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Chunk:
    """One step of a streamed answer: the answer so far, or what went wrong."""

    text: str = ""
    error: str | None = None
    error_code: int = 0
    visual_tokens: int | None = None
    projector: str | None = None
    time_to_first_token: float | None = None


class ControllerBackend:
    """Models served by workers behind a controller (``--controller-url``), as upstream's demo.

    Args:
        controller_url: the controller's URL.
        conv_mode: template for workers that do not report one (upstream's workers).
        read_timeout: seconds to wait between two chunks of a worker's stream.
    """

    def __init__(self, controller_url: str, conv_mode: str | None = None, read_timeout: float = 600.0):
        self.controller_url = controller_url.rstrip("/")
        self.conv_mode = conv_mode
        self.read_timeout = read_timeout
        self._conv_modes: dict[str, str] = {}

    def describe(self) -> str:
        return f"models served by the workers of controller `{self.controller_url}`"

    def _post(self, path: str, **kwargs) -> requests.Response:
        try:
            response = requests.post(self.controller_url + path, timeout=10, **kwargs)
        except requests.RequestException as err:
            raise RequestError(f"Controller {self.controller_url} is unreachable: {err}") from err
        if response.status_code != 200:
            raise RequestError(f"Controller {self.controller_url}{path} answered HTTP {response.status_code}")
        return response

    def list_models(self) -> list[str]:
        """Asks the controller to refresh its workers, then lists their models.

        Raises:
            RequestError: the controller cannot be reached.
        """
        self._post("/refresh_all_workers")
        return sorted(self._post("/list_models").json()["models"])

    def _worker_address(self, model_name: str) -> str:
        address = self._post("/get_worker_address", json={"model": model_name}).json()["address"]
        if not address:
            raise RequestError(f"No worker serves model {model_name!r} (controller {self.controller_url}); "
                               f"start one with python -m llava.serve.model_worker")
        return address

    def new_conversation(self, model_name: str) -> Conversation:
        """The worker's template (its ``conv_mode`` status), else ``--conv-mode``, else vicuna_v1.

        Only a template the worker reported is remembered: a worker that could not be asked is asked
        again for the next conversation.
        """
        if model_name not in self._conv_modes:
            conv_mode = None
            try:
                address = self._worker_address(model_name)
                response = requests.post(address + "/worker_get_status", timeout=10)
                if response.status_code != 200:
                    raise RequestError(f"its worker {address} answered HTTP {response.status_code}")
                conv_mode = response.json().get("conv_mode")
            except (RequestError, requests.RequestException, ValueError, AttributeError) as err:
                logger.warning("Could not read the template of %s from its worker: %s", model_name, err)
                return conv_templates[self._fallback_conv_mode(model_name)].copy()
            if conv_mode is None:
                return conv_templates[self._fallback_conv_mode(model_name)].copy()
            if conv_mode not in conv_templates:
                raise RequestError(f"Unknown conversation template {conv_mode!r} for {model_name}")
            self._conv_modes[model_name] = conv_mode
        return conv_templates[self._conv_modes[model_name]].copy()

    def _fallback_conv_mode(self, model_name: str) -> str:
        """``--conv-mode``, else vicuna_v1, for a worker that reports no template (upstream's)."""
        if self.conv_mode is not None:
            if self.conv_mode not in conv_templates:
                raise RequestError(f"Unknown conversation template {self.conv_mode!r} (--conv-mode)")
            return self.conv_mode
        logger.warning("The worker for %s reports no conv_mode and --conv-mode is not set: using %s",
                       model_name, FALLBACK_CONV_MODE)
        return FALLBACK_CONV_MODE

    def stream(self, model_name: str, conv: Conversation, temperature: float, top_p: float,
               max_new_tokens: int) -> Iterator[Chunk]:
        try:
            address = self._worker_address(model_name)
        except RequestError as err:
            yield Chunk(error=str(err), error_code=2)
            return
        prompt = conv.get_prompt()
        payload = {"model": model_name, "prompt": prompt, "temperature": float(temperature), "top_p": float(top_p),
                   "max_new_tokens": min(int(max_new_tokens), 1536), "stop": conv.stop_str,
                   "images": conv.get_images(return_pil=False)}
        received = False
        try:
            with requests.post(address + "/worker_generate_stream", json=payload, stream=True,
                               timeout=(5, self.read_timeout)) as response:
                if response.status_code != 200:
                    yield Chunk(error=f"Worker {address} for model {model_name} answered HTTP "
                                      f"{response.status_code}: {response.text[:200]}", error_code=3)
                    return
                for raw in response.iter_lines(decode_unicode=False, delimiter=b"\0"):
                    if not raw:
                        continue
                    received = True
                    try:
                        data = json.loads(raw.decode())
                    except ValueError:
                        yield Chunk(error=f"Worker {address} sent data that is not JSON: {raw[:100]!r}", error_code=3)
                        return
                    if data.get("error_code", 0) != 0:
                        yield Chunk(error=data.get("text", "unknown error"), error_code=int(data["error_code"]))
                        return
                    yield Chunk(data["text"][len(prompt):].strip(), visual_tokens=data.get("visual_tokens"),
                                projector=data.get("projector"), time_to_first_token=data.get("time_to_first_token"))
        except requests.RequestException as err:
            what = "stopped mid-answer" if received else "is unreachable"
            yield Chunk(error=f"Worker {address} for model {model_name} {what}: {err}", error_code=3)
            return
        if not received:
            yield Chunk(error=f"Worker {address} for model {model_name} closed the stream without answering",
                        error_code=3)


class WorkerBackend(ControllerBackend):
    """One model worker, addressed directly (no controller).

    Args:
        worker_url: the worker's URL.
        conv_mode: template if the worker reports none (upstream's workers).
        read_timeout: seconds to wait between two chunks of the worker's stream.
    """

    def __init__(self, worker_url: str, conv_mode: str | None = None, read_timeout: float = 600.0):
        super().__init__(worker_url, conv_mode=conv_mode, read_timeout=read_timeout)
        self.worker_url = worker_url.rstrip("/")

    def describe(self) -> str:
        return f"the models of worker `{self.worker_url}`"

    def status(self) -> dict:
        """The worker's ``/worker_get_status``.

        Raises:
            RequestError: the worker cannot be reached or answers something else than a status.
        """
        try:
            response = requests.post(self.worker_url + "/worker_get_status", timeout=10)
        except requests.RequestException as err:
            raise RequestError(f"Worker {self.worker_url} is unreachable: {err}") from err
        if response.status_code != 200:
            raise RequestError(f"Worker {self.worker_url}/worker_get_status answered HTTP {response.status_code}")
        try:
            status = response.json()
            return {**status, "model_names": list(status["model_names"])}
        except (ValueError, KeyError, TypeError) as err:
            raise RequestError(f"Worker {self.worker_url} sent a status without model_names: "
                               f"{response.text[:200]!r}") from err

    def list_models(self) -> list[str]:
        return sorted(self.status()["model_names"])

    def _worker_address(self, model_name: str) -> str:
        return self.worker_url
