"""The ``__main__`` end of the command-line tools (scorers, converters, runners, chat, demo, worker).

A missing input (a question, answer or annotation file, a checkpoint folder) ends a tool with one
``error: <what is missing>`` line on stderr and exit code 2, like a bad flag, instead of a
traceback. Called from Python, ``main()`` still raises the error. Imports nothing heavy, so the
scorers stay free of torch.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

MISSING_INPUT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def run_main(main: Callable[..., Any], *args: Any) -> Any:
    """``main(*args)``; a missing file or folder exits with code 2 and one ``error:`` line."""
    try:
        return main(*args)
    except MISSING_INPUT as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
