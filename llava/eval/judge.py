"""A judge model behind an OpenAI-compatible chat-completions API, shared by the graded benchmarks.

LLaVA-Bench (``eval_gpt_review_bench``) and MM-Vet (``eval_mmvet``) are scored by a language model
reading the answers. Both talk to it through :class:`Judge`: OpenAI's API by default (key from
``$OPENAI_API_KEY``), or any server with the same ``/chat/completions`` route via ``--api-base`` or
``$OPENAI_BASE_URL``. These are the only modules of the package that use the network, and only when
run. Failed requests are retried a bounded number of times; then the caller gets a
:class:`JudgeError` naming the item and carrying the API's own message.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import requests

OPENAI_API_BASE = "https://api.openai.com/v1"
#: HTTP statuses worth a retry: rate limits and server-side failures.
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class JudgeError(RuntimeError):
    """The judge API failed for an item (the message names it and gives the API's reason)."""


@dataclass
class Judge:
    """An OpenAI-compatible chat-completions endpoint.

    Args:
        api_base: e.g. ``https://api.openai.com/v1``; requests go to ``{api_base}/chat/completions``.
        model: the judge model.
        api_key: sent as a bearer token (None: no Authorization header, for local servers).
        max_tokens: the longest reply.
        retries: attempts after the first for connection errors, timeouts, 408/409/429/5xx.
        retry_wait: seconds before the first retry; doubled after each.
        timeout: seconds for one request.
    """

    api_base: str
    model: str
    api_key: str | None
    max_tokens: int = 1024
    retries: int = 5
    retry_wait: float = 2.0
    timeout: float = 120.0

    @property
    def url(self) -> str:
        return self.api_base.rstrip("/") + "/chat/completions"

    def complete(self, messages: list[dict], what: str, temperature: float) -> tuple[str, str]:
        """The judge's reply to ``messages`` and the model that answered (the API's ``model`` field).

        Args:
            what: names the item in error messages, e.g. "question 7".
        Raises:
            JudgeError: the API refused, or failed on every attempt.
        """
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        payload = {"model": self.model, "temperature": temperature, "max_tokens": self.max_tokens,
                   "messages": messages}
        wait, last = self.retry_wait, ""
        for attempt in range(self.retries + 1):
            if attempt:
                print(f"retrying {what} in {wait:g} s ({last})", file=sys.stderr)
                time.sleep(wait)
                wait *= 2
            try:
                response = requests.post(self.url, json=payload, headers=headers, timeout=self.timeout)
            except requests.RequestException as err:
                last = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in RETRY_STATUSES:
                last = f"HTTP {response.status_code}: {_api_message(response)}"
                continue
            if response.status_code != 200:
                raise JudgeError(f"Judge {self.url} refused {what}: HTTP {response.status_code}: "
                                 f"{_api_message(response)}")
            try:
                body = response.json()
                content = body["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError(type(content).__name__)
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise JudgeError(f"Judge {self.url} answered {what} without choices[0].message.content: "
                                 f"{response.text[:300]!r}") from err
            return content, str(body.get("model") or self.model)
        raise JudgeError(f"Judge {self.url} failed {what} {self.retries + 1} times; last: {last}")


def _api_message(response: requests.Response) -> str:
    """The error message of an OpenAI-style error body, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def add_judge_args(parser: argparse.ArgumentParser, default_model: str, model_help: str,
                   model_flags: tuple[str, ...] = ("--judge-model",)) -> None:
    """The judge's flags: model, API base, key variable, retries, retry wait, timeout."""
    parser.add_argument(*model_flags, dest="judge_model", default=default_model, help=model_help)
    parser.add_argument("--api-base", default=os.environ.get("OPENAI_BASE_URL", OPENAI_API_BASE),
                        help="an OpenAI-compatible API (default $OPENAI_BASE_URL, else OpenAI's)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the API key (needed for OpenAI's API)")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds before the first retry (doubles)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")


def judge_from_args(args: argparse.Namespace, max_tokens: int) -> Judge:
    """The :class:`Judge` the flags of :func:`add_judge_args` describe.

    Exits with a message when the judge is OpenAI's API and its key variable is unset.
    """
    api_key = os.environ.get(args.api_key_env) or None
    if api_key is None and args.api_base.rstrip("/") == OPENAI_API_BASE:
        sys.exit(f"error: the judge is OpenAI's API and ${args.api_key_env} is not set: export it, or pass "
                 f"--api-base for another OpenAI-compatible server")
    return Judge(args.api_base, args.judge_model, api_key, max_tokens, args.retries, args.retry_wait, args.timeout)
