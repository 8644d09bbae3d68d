"""The data check that runs before training: every bad sample is found and reported at once.

Upstream LLaVA meets a bad sample only when the dataloader reaches it, hours into a run (a
``KeyError``, a missing image, an ``assert``), or never notices it at all. Here the whole data
file is read and checked before the model is built:

* the file must be readable JSON (a list of samples) or JSONL (one sample per line); an error
  names the file and the line and column;
* every sample needs a ``conversations`` list of ``{"from": "human"|"gpt", "value": str}`` turns;
* an ``<image>`` tag needs an ``image`` and an ``image`` needs exactly one ``<image>`` tag (in a
  human turn);
* every image file must exist and open.

Each problem becomes a :class:`BadSample` (sample id, index, reason, path) in a
:class:`DataCheckReport`. :func:`enforce_report` raises ``ValueError`` listing them, or, with
``skip_bad_samples``, logs how many were dropped per reason and goes on with the rest.

Checks that need the tokenizer and the model (a sample too long for ``model_max_length`` even
after truncating its answer, tokenization mismatches) live in :mod:`llava.data.dataset`.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN

logger = logging.getLogger(__name__)

#: Reason key -> what it means (used in the report's summary).
REASONS: dict[str, str] = {
    "invalid_json": "line is not valid JSON",
    "not_an_object": "sample is not a JSON object",
    "no_conversations": "no 'conversations' list",
    "bad_conversations": "malformed 'conversations'",
    "empty_turn": "a turn with an empty 'value'",
    "image_tag_without_image": "<image> tag but no 'image'",
    "image_without_image_tag": "'image' but no <image> tag",
    "bad_image_tags": "wrong number or place of <image> tags",
    "plain_needs_caption": "the plain template needs one image and one caption",
    "missing_image": "image file not found",
    "unreadable_image": "image file cannot be read",
    "too_long": "does not fit in model_max_length",
}

#: How many bad samples an exception message lists; the full list goes to the report file.
MESSAGE_LIMIT = 100

ROLES = ("human", "gpt")


@dataclass(frozen=True)
class BadSample:
    """One sample that cannot be trained on.

    Attributes:
        index: position of the sample in the data file (0-based, blank JSONL lines not counted).
        sample_id: the sample's ``id`` as a string, ``None`` if it has none (or was unreadable).
        reason: a key of :data:`REASONS`.
        detail: a sentence with the actual values.
        path: the image path involved, if any.
        line: the line in the file (JSONL), if known.
    """

    index: int | None
    sample_id: str | None
    reason: str
    detail: str
    path: str | None = None
    line: int | None = None

    def describe(self) -> str:
        who = f"sample {self.sample_id!r}" if self.sample_id is not None else "sample (no id)"
        where = []
        if self.index is not None:
            where.append(f"index {self.index}")
        if self.line is not None:
            where.append(f"line {self.line}")
        location = f" ({', '.join(where)})" if where else ""
        return f"{who}{location}: {self.detail}"


@dataclass
class DataCheckReport:
    """Result of checking one data file.

    Attributes:
        data_path: the file checked.
        num_samples: samples read (good and bad).
        bad: every bad sample, in file order.
    """

    data_path: str
    num_samples: int
    bad: list[BadSample] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(b.reason for b in self.bad)

    @property
    def bad_indices(self) -> set[int]:
        return {b.index for b in self.bad if b.index is not None}

    def summary(self) -> str:
        """One line per reason: ``3 x missing_image (image file not found)``."""
        return "; ".join(f"{n} x {reason} ({REASONS.get(reason, reason)})" for reason, n in
                         sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def format(self, limit: int | None = MESSAGE_LIMIT, report_file: str | None = None) -> str:
        """A multi-line message listing the bad samples (the first ``limit`` of them)."""
        lines = [f"{len(self.bad)} of {self.num_samples} samples in {self.data_path} cannot be used: {self.summary()}"]
        shown = self.bad if limit is None else self.bad[:limit]
        lines += [f"  - {b.describe()}" for b in shown]
        if len(shown) < len(self.bad):
            more = f"  ... and {len(self.bad) - len(shown)} more"
            lines.append(more + (f" (all listed in {report_file})" if report_file else ""))
        return "\n".join(lines)

    def write(self, path: str | os.PathLike) -> str:
        """Writes the full report as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"data_path": self.data_path, "num_samples": self.num_samples,
                                    "counts": dict(self.counts), "bad": [asdict(b) for b in self.bad]}, indent=1))
        return str(path)


# ------------------------------------------------------------------------------------ reading


def _is_jsonl(path: Path, text: str) -> bool:
    if path.suffix == ".jsonl":
        return True
    if path.suffix == ".json":
        return False
    return not text.lstrip().startswith("[")


def load_records(data_path: str | os.PathLike) -> tuple[list[tuple[int, int | None, Any]], list[BadSample]]:
    """Reads a LLaVA data file: a JSON list, or JSONL (``.jsonl``, or any file not starting with ``[``).
    A UTF-8 byte order mark (Windows editors, PowerShell) is skipped.

    Returns:
        (records, bad): records are ``(index, line or None, parsed object)``; bad holds the
        JSONL lines that are not valid JSON (a JSON list that does not parse raises instead).
    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not UTF-8, or a JSON list that does not parse (naming line and column), or
            JSON that is not a list, or a ``.jsonl`` file that holds a JSON list.
    """
    path = Path(data_path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # err.start counts after the BOM
        raise ValueError(f"Cannot read {path}: not UTF-8 text at byte {err.start + offset}: {err.reason}") from err
    records: list[tuple[int, int | None, Any]] = []
    bad: list[BadSample] = []
    if _is_jsonl(path, text):
        if text.lstrip().startswith("["):
            # Refused rather than read as a list: the name says one sample per line, and other readers
            # of the file go by it. Read by lines, each line of a list was reported as a bad sample.
            try:
                whole = json.loads(text)
            except json.JSONDecodeError:
                whole = None  # not one JSON list: read line by line below
            if isinstance(whole, list):
                raise ValueError(f"Cannot read {path}: this .jsonl file holds a JSON list ({len(whole)} samples), "
                                 f"not one sample per line; rename it to .json, or write one sample per line")
        index = 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((index, lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                bad.append(BadSample(index, None, "invalid_json",
                                     f"invalid JSON in {path} at line {lineno}, column {err.colno}: {err.msg}",
                                     line=lineno))
            index += 1
        return records, bad
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"Cannot read {path}: invalid JSON at line {err.lineno}, column {err.colno} "
                         f"(character {err.pos}): {err.msg}") from err
    if not isinstance(data, list):
        raise ValueError(f"Cannot read {path}: expected a JSON list of samples, got a JSON {type(data).__name__}")
    return [(i, None, obj) for i, obj in enumerate(data)], bad


# ------------------------------------------------------------------------------------ checks


def has_image(sample: dict) -> bool:
    """Whether a sample has an image; ``"image": null`` is a text-only sample."""
    return sample.get("image") is not None


def sample_id(obj: Any) -> str | None:
    if isinstance(obj, dict) and obj.get("id") is not None:
        return str(obj["id"])
    return None


def _structure_problem(obj: Any, plain: bool) -> tuple[str, str] | None:
    """(reason, detail) for the first structural problem of a sample, or None."""
    if not isinstance(obj, dict):
        return "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
    if "conversations" not in obj:
        return "no_conversations", f"has no 'conversations' (keys: {sorted(obj)})"
    turns = obj["conversations"]
    if not isinstance(turns, list) or not turns:
        return "no_conversations", f"'conversations' must be a non-empty list, got {turns!r:.80}"
    for j, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in ROLES:
            return "bad_conversations", (f"turn {j} must be {{'from': 'human'|'gpt', 'value': str}}, "
                                         f"got {turn!r:.80}")
        if not turn["value"].strip():
            # Upstream's templates render an empty message as "the model answers next" (its text and
            # labels would not line up there), and an empty turn has nothing to learn: a data error.
            return "empty_turn", f"turn {j} ({turn['from']}) has an empty 'value'"
    # Upstream drops a leading gpt turn, then expects human/gpt alternating.
    body = turns[1:] if turns[0]["from"] != "human" else turns
    for j, turn in enumerate(body):
        if turn["from"] != ROLES[j % 2]:
            return "bad_conversations", f"turns must alternate human/gpt; turn {j} is {turn['from']!r}"
    if not any(t["from"] == "gpt" for t in body):
        return "bad_conversations", "no gpt turn to train on"

    image = obj.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        return "bad_image_tags", f"'image' must be one file name, got {image!r:.80}"
    tags = [t["value"].count(DEFAULT_IMAGE_TOKEN) for t in turns]
    in_replies = sum(n for n, t in zip(tags, turns) if t["from"] == "gpt")
    if image is None and sum(tags):
        return "image_tag_without_image", f"has {sum(tags)} {DEFAULT_IMAGE_TOKEN} tag(s) but no 'image'"
    if image is not None and not sum(tags):
        return "image_without_image_tag", f"has image {image!r} but no {DEFAULT_IMAGE_TOKEN} tag in its turns"
    if image is not None and (sum(tags) != 1 or in_replies):
        return "bad_image_tags", (f"needs exactly one {DEFAULT_IMAGE_TOKEN} tag in a human turn for its one image, "
                                  f"found {sum(tags)} ({in_replies} in gpt turns)")
    if plain and (image is None or len(body) != 2):
        return "plain_needs_caption", (f"the plain template (pretraining) needs an image and exactly one human and "
                                       f"one gpt turn; got {'no image and ' if image is None else ''}{len(body)} turns")
    return None


def _image_problem(path: str, open_files: bool) -> tuple[str, str] | None:
    if os.path.isdir(path):
        return "missing_image", f"image path is a directory, not a file: {path}"
    if not os.path.isfile(path):
        return "missing_image", f"image file not found: {path}"
    if not open_files:
        return None
    try:
        # Decoded in full, as training will: verify() reads only the headers, so a file cut short
        # (a partial download) passed it and failed hours into the run.
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises many types for a bad file; the error is reported, not hidden
        return "unreadable_image", f"cannot read image {path}: {type(err).__name__}: {err}"
    return None


def check_data_file(
    data_path: str | os.PathLike,
    image_folder: str | None,
    *,
    plain: bool = False,
    check_images: bool = True,
    num_threads: int = 16,
) -> tuple[list[tuple[int, dict]], DataCheckReport]:
    """Reads and checks a whole data file.

    Args:
        data_path: JSON list or JSONL file of LLaVA samples.
        image_folder: folder the ``image`` paths are relative to (``None``: relative to the cwd).
        plain: the ``plain`` template is used (each sample must be one image + one caption).
        check_images: open and decode every image file (``False``: only check that it exists).
        num_threads: threads for the image checks (file system bound).
    Returns:
        (good, report): ``good`` holds ``(index, sample)`` for every usable sample, in file order.
    """
    records, bad = load_records(data_path)
    report = DataCheckReport(str(data_path), num_samples=len(records) + len(bad), bad=bad)
    good: list[tuple[int, dict]] = []
    for index, line, obj in records:
        problem = _structure_problem(obj, plain)
        if problem is not None:
            report.bad.append(BadSample(index, sample_id(obj), *problem, line=line))
        else:
            good.append((index, obj))

    with_images = [(index, obj) for index, obj in good if has_image(obj)]
    paths = [os.path.join(image_folder or "", obj["image"]) for _, obj in with_images]
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        problems = list(pool.map(lambda p: _image_problem(p, check_images), paths))
    bad_images = set()
    for (index, obj), path, problem in zip(with_images, paths, problems):
        if problem is not None:
            report.bad.append(BadSample(index, sample_id(obj), *problem, path=path))
            bad_images.add(index)
    good = [(index, obj) for index, obj in good if index not in bad_images]
    report.bad.sort(key=lambda b: (b.index if b.index is not None else -1, b.line or 0))
    return good, report


def enforce_report(report: DataCheckReport, skip_bad_samples: bool, report_file: str | None = None,
                   log: logging.Logger = logger) -> None:
    """Stops the run on bad samples, or (``skip_bad_samples``) logs what is skipped.

    Args:
        report_file: where the caller wrote the full report (:meth:`DataCheckReport.write`), named
            in the message.
    Raises:
        ValueError: listing the bad samples (at most :data:`MESSAGE_LIMIT`; all in ``report_file``).
    """
    if not report.bad:
        return
    if not skip_bad_samples:
        raise ValueError(report.format(report_file=report_file)
                         + "\nFix the data, or pass --skip_bad_samples True to train on the other samples.")
    log.warning("Skipping %d of %d samples in %s (--skip_bad_samples): %s%s", len(report.bad), report.num_samples,
                report.data_path, report.summary(), f"; full list in {report_file}" if report_file else "")
    for b in report.bad[:10]:
        log.warning("  skipped %s", b.describe())
