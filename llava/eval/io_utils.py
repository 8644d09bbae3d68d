"""Reading and writing the eval file formats, with errors that name the file and line.

Answer files are jsonl ``{"question_id", "prompt", "text", "answer_id", "model_id",
"metadata"}``; question files are jsonl ``{"question_id", "image", "text"[, "category"]}``.
Question ids are ints in some benchmarks and strings in others (and SEED mixes them), so ids
are compared through :func:`id_key` (their ``str``), while outputs keep the original value.

Upstream LLaVA skips unparsable lines in some converters and silently scores partial answer
files in others; here a bad line raises and every scorer reports its coverage.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

# How many ids an error or report message lists before it says "...".
_MAX_IDS_SHOWN = 10


def id_key(question_id: Any) -> str:
    """Key under which a question id is matched: ``1`` and ``"1"`` are the same question."""
    return str(question_id)


def answer_key(record: dict) -> tuple:
    """What identifies one answer: question id, round, prompt and instruction. Ids alone repeat in
    several benchmarks: TextVQA's question files use the image id, MME gives the two questions of an
    image one id, and MMBench's rounds share one. MMBench records its answer-format instruction apart
    from the prompt (``instruction``)."""
    return id_key(record["question_id"]), record.get("round_id"), record.get("prompt"), record.get("instruction")


def format_ids(ids: Iterable[Any], limit: int = _MAX_IDS_SHOWN, quote: bool = True) -> str:
    """Comma-separated first ``limit`` ids (their ``repr`` if ``quote``), with the number left out."""
    ids = list(ids)
    shown = ", ".join(repr(i) if quote else str(i) for i in ids[:limit])
    if len(ids) > limit:
        shown += f", ... ({len(ids) - limit} more)"
    return shown


def _check_exists(path: str | os.PathLike) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {os.fspath(path)!r}")


def load_json(path: str | os.PathLike) -> Any:
    """Load a whole JSON file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (message names the file, line and column).
    """
    _check_exists(path)
    with open(path, encoding="utf-8-sig") as f:  # a byte order mark (Windows editors) is skipped
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{os.fspath(path)}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})"
        ) from err


def load_jsonl_lines(path: str | os.PathLike, required: Iterable[str] = ()) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a jsonl file, in file order.

    Args:
        required: keys every object must have.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not valid JSON, not a JSON object or lacks a ``required`` key (names
            file and line number).
    """
    required = tuple(required)
    _check_exists(path)
    records = []
    with open(path, encoding="utf-8-sig") as f:  # a byte order mark (Windows editors) is skipped
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{os.fspath(path)}:{lineno}: not valid JSON ({err.msg}): {line.strip()[:80]!r}"
                ) from err
            if not isinstance(record, dict):
                raise ValueError(
                    f"{os.fspath(path)}:{lineno}: expected a JSON object, got {type(record).__name__}"
                )
            missing = [k for k in required if k not in record]
            if missing:
                raise ValueError(f"{os.fspath(path)}:{lineno}: no {', '.join(map(repr, missing))} field; "
                                 f"keys: {sorted(record)}")
            records.append((lineno, record))
    return records


def load_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Load a jsonl file: one JSON object per line; blank lines are skipped.

    Args:
        required: keys every object must have.

    Returns:
        The objects in file order.

    Raises:
        As :func:`load_jsonl_lines`.
    """
    return [record for _, record in load_jsonl_lines(path, required)]


def load_answer_lines(path: str | os.PathLike, strings: Iterable[str] = ("text",)) -> list[tuple[int, dict]]:
    """``(line number, answer)`` for every answer of an answer jsonl, each with a ``question_id`` and
    the ``strings`` fields holding strings (a null or numeric ``text`` would crash the scorers).

    Raises:
        As :func:`load_jsonl_lines`, or a field of ``strings`` is missing or not a string (names the
        file, line, question id and field).
    """
    lines = load_jsonl_lines(path, required=("question_id",))
    for lineno, answer in lines:
        for key in strings:
            where = f"{os.fspath(path)}:{lineno}: answer for question_id {answer['question_id']!r}"
            if key not in answer:
                raise ValueError(f"{where} has no {key!r} field")
            if not isinstance(answer[key], str):
                raise ValueError(f"{where}: {key!r} must be a string, got {json.dumps(answer[key])[:60]}")
    return lines


def _make_parent(path: str | os.PathLike) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = None) -> None:
    """Write ``obj`` as JSON, creating the parent directory."""
    _make_parent(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> None:
    """Write one JSON object per line, creating the parent directory."""
    _make_parent(path)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def index_by_id(
    records: list[dict], path: str | os.PathLike, key: str = "question_id"
) -> dict[str, dict]:
    """Map :func:`id_key` of ``record[key]`` to the record.

    Args:
        records: objects loaded from ``path`` (used only in messages).
        path: the file the records came from.
        key: the id field.

    Raises:
        ValueError: a record lacks ``key`` (names its position) or ids repeat (names them;
            a repeated id usually means a chunk was merged twice).
    """
    index: dict[str, dict] = {}
    duplicates = []
    for position, record in enumerate(records, start=1):
        if key not in record:
            raise ValueError(
                f"{os.fspath(path)}: record {position} has no {key!r} field; keys: {sorted(record)}"
            )
        k = id_key(record[key])
        if k in index:
            duplicates.append(record[key])
        index[k] = record
    if duplicates:
        raise ValueError(
            f"{os.fspath(path)}: {len(duplicates)} repeated {key} value(s): {format_ids(duplicates)}"
        )
    return index


def load_answers(path: str | os.PathLike) -> dict[str, dict]:
    """Load an answer jsonl and index it by question id (see :func:`index_by_id`).

    Raises:
        ValueError: as :func:`load_answer_lines` and :func:`index_by_id`.
    """
    return index_by_id([answer for _, answer in load_answer_lines(path)], path)


@dataclass
class Coverage:
    """How much of a benchmark an answer file covers.

    Attributes:
        answered: expected questions that have an answer.
        total: expected questions.
        unanswered_ids: expected ids with no answer, in the benchmark's order.
    """

    answered: int
    total: int
    unanswered_ids: list = field(default_factory=list)

    @property
    def unanswered(self) -> int:
        return self.total - self.answered

    def message(self) -> str:
        """E.g. ``"answered 97/100; 3 unanswered (e.g. 4, 17, 23)"``."""
        text = f"answered {self.answered}/{self.total}"
        if self.unanswered:
            text += f"; {self.unanswered} unanswered (e.g. {format_ids(self.unanswered_ids, 5)})"
        return text

    def as_dict(self) -> dict:
        """The fields every scorer puts in its result dict."""
        return {
            "answered": self.answered,
            "total": self.total,
            "unanswered": self.unanswered,
            "unanswered_ids": list(self.unanswered_ids),
        }


def check_coverage(
    answer_ids: Iterable[str],
    expected_ids: Iterable[Any],
    answers_path: str | os.PathLike,
    expected_what: str,
) -> Coverage:
    """Compare the ids in an answer file with the ids a benchmark expects.

    Args:
        answer_ids: :func:`id_key` of every answer's question id.
        expected_ids: the benchmark's question ids (any type), in benchmark order.
        answers_path: the answer file (for messages).
        expected_what: names the annotation source in messages, e.g. a file path.

    Returns:
        The coverage; unanswered questions are reported, not raised.

    Raises:
        ValueError: the answer file has ids the benchmark does not know (names them): the
            answer file belongs to another split or benchmark.
    """
    expected = list(expected_ids)
    expected_keys = {id_key(i) for i in expected}
    answer_keys = set(answer_ids)
    unknown = sorted(answer_keys - expected_keys)
    if unknown:
        raise ValueError(
            f"{os.fspath(answers_path)}: {len(unknown)} answer(s) have question ids not in "
            f"{expected_what}: {format_ids(unknown)}"
        )
    unanswered = [i for i in expected if id_key(i) not in answer_keys]
    return Coverage(answered=len(expected) - len(unanswered), total=len(expected), unanswered_ids=unanswered)
