"""Send one message to a model worker and print the streamed answer: a smoke test of a deployment.

Upstream's ``llava.serve.test_message``, with the same flags: the worker is found through the
controller (``--controller-address``) or addressed directly (``--worker-address``). Added here:
``--image-file`` asks about an image, ``--temperature`` (upstream: always 0.7), and the prompt is
rendered with the worker's own template (its ``conv_mode`` status, else ``--conv-mode``) instead of
upstream's fixed "###" one. ``--model-name`` may be left out when only one model is served.

    python -m llava.serve.test_message --controller-address http://localhost:21001 \\
        --image-file view.jpg --message "What is in the image?"

Exits 1, with a message naming the controller or worker and what went wrong, when no answer came.
"""

from __future__ import annotations

import argparse
import sys

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.serve.client import ControllerBackend, WorkerBackend
from llava.serve.inference import RequestError, open_image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Send one message to a LLaVA model worker and print the answer.")
    parser.add_argument("--controller-address", default="http://localhost:21001")
    parser.add_argument("--worker-address", default=None, help="ask this worker directly (no controller)")
    parser.add_argument("--model-name", default=None, help="default: the only model served")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.7)
    parser.add_argument("--conv-mode", default=None, help="template if the worker reports none")
    parser.add_argument("--image-file", default=None, help="an image to ask about")
    parser.add_argument("--message", default="Tell me a story with more than 1000 words.")
    return parser


def pick_model(models: list[str], wanted: str | None, where: str) -> str:
    """``wanted`` if served, else the only model served.

    Raises:
        RequestError: no model, several models and none asked for, or ``wanted`` is not served.
    """
    if not models:
        raise RequestError(f"No models are served by {where}")
    if wanted is None:
        if len(models) > 1:
            raise RequestError(f"{where} serves several models {models}: choose one with --model-name")
        return models[0]
    if wanted not in models:
        raise RequestError(f"Model {wanted!r} is not served by {where}; models available: {models}")
    return wanted


def send_message(args: argparse.Namespace, out=sys.stdout) -> int:
    """Sends ``args.message`` and writes the prompt and the streamed answer to ``out``.

    Returns:
        0 when an answer came, 1 on any failure (the reason is written to stderr).
    """
    if args.worker_address:
        backend = WorkerBackend(args.worker_address, conv_mode=args.conv_mode)
        where = f"worker {backend.worker_url}"
    else:
        backend = ControllerBackend(args.controller_address, conv_mode=args.conv_mode)
        where = f"controller {backend.controller_url}"
    try:
        models = backend.list_models()
        model_name = pick_model(models, args.model_name, where)
        conv = backend.new_conversation(model_name)
        message = args.message
        if args.image_file:
            image = open_image(args.image_file, name=args.image_file)
            if DEFAULT_IMAGE_TOKEN not in message:
                message = DEFAULT_IMAGE_TOKEN + "\n" + message
            conv.append_message(conv.roles[0], (message, image, "Default"))
        else:
            conv.append_message(conv.roles[0], message)
        conv.append_message(conv.roles[1], None)
    except RequestError as err:
        print(f"test_message: {err}", file=sys.stderr)
        return 1
    print(f"models: {models}", file=out)
    print(conv.get_prompt(), end="", file=out, flush=True)
    shown = ""
    for chunk in backend.stream(model_name, conv, args.temperature, args.top_p, args.max_new_tokens):
        if chunk.error is not None:
            print(file=out, flush=True)
            print(f"test_message: {chunk.error} (error code {chunk.error_code})", file=sys.stderr)
            return 1
        # Streamed text only grows, except where a stop string is cut off at the end: print the new part.
        if chunk.text.startswith(shown):
            print(chunk.text[len(shown):], end="", file=out, flush=True)
        else:
            print("\n" + chunk.text, end="", file=out, flush=True)
        shown = chunk.text
    print(file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.image_file is not None and not args.image_file.strip():  # e.g. an unset shell variable
        parser.error("--image-file is empty: give an image file or URL, or leave the flag out to send text only")
    sys.exit(send_message(args))


if __name__ == "__main__":
    main()
