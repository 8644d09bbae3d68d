"""Register a running model worker with a controller by hand.

Upstream's ``llava.serve.register_worker``, with the same flags. Useful for a worker started with
``--no-register``, or after the controller restarted (workers also re-register on their own at
their next heart beat). The controller asks the worker for its status, so the worker must be
reachable from the controller at ``--worker-name``.

    python -m llava.serve.register_worker --controller-address http://localhost:21001 \\
        --worker-name http://localhost:21002 --check-heart-beat

Exits 1, saying whether the controller or the worker failed, if the worker is not registered.
"""

from __future__ import annotations

import argparse
import sys

import requests


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Register a LLaVA model worker with a controller.")
    parser.add_argument("--controller-address", default="http://localhost:21001")
    parser.add_argument("--worker-name", required=True, help="the worker's URL, as the controller reaches it")
    parser.add_argument("--check-heart-beat", action="store_true",
                        help="drop the worker when its heart beats stop (model workers send them)")
    return parser


def register(controller: str, worker: str, check_heart_beat: bool) -> list[str]:
    """Registers ``worker`` with ``controller``.

    Returns:
        The models the controller lists afterwards.
    Raises:
        RuntimeError: the controller is unreachable or refused, or could not read the worker's status.
    """
    controller = controller.rstrip("/")
    worker = worker.rstrip("/")
    data = {"worker_name": worker, "check_heart_beat": check_heart_beat, "worker_status": None}
    try:
        response = requests.post(controller + "/register_worker", json=data, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"Controller {controller} refused to register {worker}: "
                               f"HTTP {response.status_code} {response.text[:200]}")
        # Upstream's controller answers nothing; this project's says whether the worker answered.
        answer = response.json() if response.content else None
        if isinstance(answer, dict) and answer.get("registered") is False:
            raise RuntimeError(f"Controller {controller} could not read the status of worker {worker} "
                               f"({worker}/worker_get_status): is the worker running, and reachable from "
                               f"the controller at that address?")
        models = requests.post(controller + "/list_models", timeout=30).json()["models"]
    except requests.RequestException as err:
        raise RuntimeError(f"Controller {controller} is unreachable: {err}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise RuntimeError(f"Controller {controller} sent an unexpected answer: {err}") from err
    return models


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        models = register(args.controller_address, args.worker_name, args.check_heart_beat)
    except RuntimeError as err:
        print(f"register_worker: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"Registered {args.worker_name.rstrip('/')} with {args.controller_address.rstrip('/')}; "
          f"models served: {models}")


if __name__ == "__main__":
    main()
