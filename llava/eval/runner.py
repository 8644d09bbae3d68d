"""What the benchmark runners share: questions in, one answer line per question out.

The runners (``model_vqa_loader``, ``model_vqa``, ``model_vqa_science``, ``model_vqa_mmbench``)
only turn their benchmark's question format into :class:`Item` s; this module does the rest:

* command-line arguments (upstream LLaVA-1.5's, plus ``--batch-size``, ``--device``,
  ``--num-workers`` and ``--resume/--no-resume``);
* question files read with errors that name the file and line; missing images reported with
  their question id and path before the model is loaded;
* ``--num-chunks/--chunk-idx`` splitting exactly as upstream (:func:`get_chunk`);
* resuming: answers already in the answer file are kept, their questions skipped, and each new
  answer is flushed as soon as it is written;
* batched greedy generation with left padding (:func:`generate_texts`), which gives the same
  answers as batch size 1;
* a progress bar, and the answer-file format ``{"question_id", "prompt", "text", "answer_id",
  "model_id", "metadata"}``.

The model is used the way a user would use it: ``load_pretrained_model`` and ``generate``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from transformers import StoppingCriteriaList

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.conversation import conv_templates, resolve_conv_mode
from llava.eval.io_utils import answer_key, format_ids, load_jsonl_lines
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    get_model_name_from_path,
    load_image_from_base64,
    process_images,
    tokenizer_image_token,
)
from llava.model.builder import load_pretrained_model
from llava.utils import default_device


# ----------------------------------------------------------------------------- arguments


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` for a number in [low, high] ((low, high] with ``low_open``), so that an
    out-of-range flag stops the parser before the model is loaded."""
    def parse(text: str):
        value = kind(text)
        if value < low or (low_open and value == low) or (high is not None and value > high):
            bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return parse


def add_model_args(parser: argparse.ArgumentParser, *, temperature: float = 0.2, max_new_tokens: int = 128) -> None:
    """Arguments every runner has: the checkpoint, the template, decoding and the device."""
    parser.add_argument("--model-path", type=str, required=True, help="checkpoint folder")
    parser.add_argument("--model-base", type=str, default=None,
                        help="base LLM folder, for projector-only and LoRA checkpoints")
    parser.add_argument("--conv-mode", type=str, default=None,
                        help="conversation template; default: the checkpoint's conv_mode, else vicuna_v1")
    # Upstream passes these to generate unchecked: --num_beams 0 divides by zero there, and a
    # negative temperature silently decodes greedily.
    parser.add_argument("--temperature", type=_number(float, 0), default=temperature, help="0 = greedy")
    parser.add_argument("--top_p", type=_number(float, 0, 1, low_open=True), default=None)
    parser.add_argument("--num_beams", type=_number(int, 1), default=1)
    parser.add_argument("--max_new_tokens", type=_number(int, 1), default=max_new_tokens)
    parser.add_argument("--device", type=str, default=None, help="cuda, cuda:1, mps, cpu; default: cuda if available")


def add_runner_args(parser: argparse.ArgumentParser, *, question_file: str, temperature: float = 0.2,
                    max_new_tokens: int = 128, question_file_aliases: Sequence[str] = ()) -> None:
    """Upstream's benchmark-runner arguments plus batching and resuming.

    Args:
        question_file_aliases: other spellings of ``--question-file`` an upstream runner used.
    """
    add_model_args(parser, temperature=temperature, max_new_tokens=max_new_tokens)
    parser.add_argument("--image-folder", type=str, default="")
    parser.add_argument("--question-file", *question_file_aliases, dest="question_file", type=str,
                        default=question_file)
    parser.add_argument("--answers-file", type=str, default="answer.jsonl")
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    # New here: upstream runs one question at a time and always starts the answer file afresh.
    parser.add_argument("--batch-size", type=_number(int, 1), default=1,
                        help="questions generated together (left padding; same greedy answers as 1)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="image-loading processes; default 4 on CUDA, 0 otherwise")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the answers already in --answers-file and skip their questions")


# ----------------------------------------------------------------------------- questions


def split_list(lst: Sequence, n: int) -> list:
    """Upstream's split: chunks of ``ceil(len / n)`` items (so there may be fewer than ``n``)."""
    if not lst:
        return []
    size = math.ceil(len(lst) / n)
    return [lst[i:i + size] for i in range(0, len(lst), size)]


def get_chunk(lst: Sequence, n: int, k: int) -> list:
    """Chunk ``k`` of ``n``, the same questions upstream's ``get_chunk`` gives.

    Differs from upstream on purpose: a chunk index past the last non-empty chunk (more GPUs
    than ``ceil``-sized chunks) gives an empty chunk instead of an IndexError.
    """
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--chunk-idx must be in [0, --num-chunks); got chunk {k} of {n}")
    chunks = split_list(lst, n)
    return list(chunks[k]) if k < len(chunks) else []


def load_questions(path: str, required: Sequence[str] = ("question_id", "text")) -> list[dict]:
    """A question jsonl, each line checked for the ``required`` keys.

    Raises:
        ValueError: the file has no question, or a line is not JSON, lacks a required key, has a
            ``question_id`` that is not a string or an integer (answers are matched by the id's
            text, and ``7.0`` is not a benchmark's ``7``), a ``text`` that is not a string or an
            ``image`` that is not one file name; names the file and line. (A line may repeat
            another: it is answered again, as upstream does.)
    """
    path = os.path.expanduser(path)
    questions = []
    for lineno, record in load_jsonl_lines(path):
        missing = [k for k in required if k not in record]
        if missing:
            raise ValueError(f"{path}:{lineno}: question has no {', '.join(map(repr, missing))}; "
                             f"keys: {sorted(record)}")
        qid = record.get("question_id")
        if "question_id" in record and (not isinstance(qid, (str, int)) or isinstance(qid, bool)):
            raise ValueError(f"{path}:{lineno}: 'question_id' must be a string or an integer, got "
                             f"{json.dumps(qid)[:80]}")
        image = record.get("image")
        if image is not None and (not isinstance(image, str) or not image):
            raise ValueError(f"{path}:{lineno}: question_id {record['question_id']!r}: 'image' must be one file "
                             f"name (or absent for a text-only question), got {image!r:.80}")
        if "text" in record and not isinstance(record["text"], str):
            raise ValueError(f"{path}:{lineno}: question_id {record.get('question_id')!r}: 'text' must be a "
                             f"string, got {json.dumps(record['text'])[:80]}")
        questions.append(record)
    if not questions:
        raise ValueError(f"{path}: no questions in the file")
    return questions


# ----------------------------------------------------------------------------- prompts


def image_prompt(question: str, config) -> str:
    """``<image>\\n`` + question, wrapped in ``<im_start>``/``<im_end>`` when the model uses them."""
    if getattr(config, "mm_use_im_start_end", False):
        return DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN + "\n" + question
    return DEFAULT_IMAGE_TOKEN + "\n" + question


def chat_prompt(conv_mode: str, message: str) -> str:
    """One user turn rendered in ``conv_mode``, ending where the assistant answers."""
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], message)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


# ----------------------------------------------------------------------------- model


@dataclass
class LoadedModel:
    """A checkpoint loaded for evaluation, with the template its prompts use."""

    tokenizer: Any
    model: Any
    image_processor: Any
    model_name: str
    conv_mode: str

    @property
    def stop_str(self) -> str:
        return conv_templates[self.conv_mode].stop_str


def load_model(args: argparse.Namespace) -> LoadedModel:
    """``load_pretrained_model`` on ``args.device`` (default: :func:`default_device`)."""
    model_path = os.path.expanduser(args.model_path)
    model_name = get_model_name_from_path(model_path)
    device = args.device or default_device()
    tokenizer, model, image_processor, _ = load_pretrained_model(model_path, args.model_base, model_name, device=device)
    return LoadedModel(tokenizer, model, image_processor, model_name, resolve_conv_mode(model.config, args.conv_mode))


@dataclass
class GenerationSettings:
    """Decoding settings from the command line; ``temperature == 0`` is greedy."""

    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 128

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "GenerationSettings":
        return cls(args.temperature, args.top_p, args.num_beams, args.max_new_tokens)

    def generate_kwargs(self) -> dict:
        kwargs = dict(do_sample=self.temperature > 0, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
                      use_cache=True)
        if self.temperature > 0:  # greedy decoding ignores them, and transformers warns when they are passed
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        return kwargs


def pad_token_id(tokenizer) -> int:
    """The id used for left padding: the tokenizer's pad, else its eos, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def _eos_ids(model, tokenizer) -> set[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def generate_texts(model, tokenizer, prompts: Sequence[str], images: Sequence[torch.Tensor | None],
                   image_sizes: Sequence[Any], settings: GenerationSettings, stop_str: str | None) -> list[str]:
    """Answers for a batch of prompts, generated together.

    Prompts are tokenized with one -200 per ``<image>``, left-padded with :func:`pad_token_id`
    and masked, so every row's answer starts at the same position. Each row stops at its own
    ``stop_str`` (KeywordsStoppingCriteria) or eos; the text is cut at the first eos and at the
    first ``stop_str`` and stripped, so a row's answer does not depend on the rows beside it.

    Args:
        prompts: B prompt strings (templates applied).
        images: per row None (text only), a [3, H, W] or a [k, 3, H, W] pixel tensor.
        image_sizes: per row the original (W, H) size(s), or None.
        settings: decoding settings.
        stop_str: the template's stop string, or None.
    Returns:
        B answer strings.
    """
    device = model.device
    rows = [tokenizer_image_token(p, tokenizer) for p in prompts]
    pad = pad_token_id(tokenizer)
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, longest - len(row):] = torch.tensor(row, dtype=torch.long)
        attention_mask[b, longest - len(row):] = 1
    pixels = [img.to(device=device, dtype=model.dtype) for img in images if img is not None]
    sizes = []
    for size in image_sizes:
        if size is None:
            continue
        sizes.extend(size if isinstance(size, list) else [size])
    kwargs = settings.generate_kwargs()
    if stop_str:
        kwargs["stopping_criteria"] = StoppingCriteriaList([KeywordsStoppingCriteria([stop_str], tokenizer, input_ids)])
    with torch.inference_mode():
        output_ids = model.generate(
            input_ids.to(device),
            images=pixels or None,
            image_sizes=sizes or None,
            attention_mask=attention_mask.to(device),
            pad_token_id=pad,
            **kwargs,
        )
    eos = _eos_ids(model, tokenizer)
    texts = []
    for row in output_ids.tolist():  # only the new tokens: generation runs from inputs_embeds
        end = next((i for i, token in enumerate(row) if token in eos), len(row))
        text = tokenizer.decode(row[:end], skip_special_tokens=True)
        if stop_str and stop_str in text:
            text = text[: text.index(stop_str)]
        texts.append(text.strip())
    return texts


# ----------------------------------------------------------------------------- items and answers


@dataclass
class Item:
    """One generation to run and the answer line it produces.

    Attributes:
        fields: the answer line without ``text``/``answer_id``/``model_id``/``metadata``;
            always ``question_id`` and ``prompt`` (the question as upstream records it).
        prompt: the full prompt given to the model (template applied).
        image_file: path of the image, or None.
        image_b64: the image as base64 (MMBench's tsv), or None.
    """

    fields: dict
    prompt: str
    image_file: str | None = None
    image_b64: str | None = None

    @property
    def key(self) -> tuple:
        return answer_key(self.fields)

    @property
    def has_image(self) -> bool:
        return self.image_file is not None or self.image_b64 is not None


def new_answer_id() -> str:
    """A fresh answer id: ``shortuuid`` as upstream when it is installed, else a uuid4 hex."""
    if importlib.util.find_spec("shortuuid") is not None:
        import shortuuid

        return shortuuid.uuid()
    return uuid.uuid4().hex


def check_images(images: Sequence[tuple[Any, str]]) -> None:
    """Every image file exists; the runners call this before loading the model.

    Args:
        images: ``(question_id, path)`` pairs.
    Raises:
        FileNotFoundError: names the first missing image's question id and path, and how many more.
        IsADirectoryError: the same, when the first such path is a folder.
    """
    missing = [(qid, path) for qid, path in images if not os.path.isfile(path)]
    if missing:
        (qid, path), rest = missing[0], missing[1:]
        more = f" ({len(rest)} more missing: question_id {format_ids([q for q, _ in rest], 5)})" if rest else ""
        if os.path.isdir(path):
            raise IsADirectoryError(f"Image for question_id {qid!r} is a folder, not an image file: {path}{more}")
        raise FileNotFoundError(f"Image for question_id {qid!r} not found: {path}{more}")


def load_item_image(item: Item) -> Image.Image:
    """The item's image as RGB, from its file or its base64 text.

    Raises:
        ValueError: the image cannot be read; names the question id and the file.
    """
    source = "its base64 image" if item.image_b64 is not None else item.image_file
    try:
        if item.image_b64 is not None:
            return load_image_from_base64(item.image_b64).convert("RGB")
        with Image.open(item.image_file) as image:
            return image.convert("RGB")
    except Exception as err:  # PIL raises many types for a bad file; say which question it was
        raise ValueError(f"question_id {item.fields['question_id']!r}: cannot read {source}: "
                         f"{type(err).__name__}: {err}") from err


class _ImageDataset(Dataset):
    """Loads and preprocesses each item's image (in DataLoader workers when there are any)."""

    def __init__(self, items: Sequence[Item], image_processor, config):
        self.items, self.image_processor, self.config = items, image_processor, config

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        if not item.has_image:
            return index, None, None
        image = load_item_image(item)
        return index, process_images([image], self.image_processor, self.config)[0], image.size


def _collate(batch):
    return batch


class AnswerFile:
    """An answer jsonl opened for appending, resuming from the answers it already has.

    An interrupted run can leave a last line cut short: it is dropped (with a message). Any other
    line that is not JSON is an error naming the line.
    """

    def __init__(self, path: str, resume: bool = True):
        self.path = os.path.expanduser(path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        self.done: dict[tuple, list[int]] = {}  # answer key -> lines holding it
        needs_newline = False
        if resume and os.path.isfile(self.path):
            needs_newline = self._read_existing()
        self._file = open(self.path, "a" if resume else "w", encoding="utf-8")
        if needs_newline:
            self._file.write("\n")

    def _read_existing(self) -> bool:
        with open(self.path, "rb") as f:
            data = f.read()
        if not data:
            return False
        complete = data.endswith(b"\n")
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        if not complete:
            try:
                json.loads(data[last_start:])
            except ValueError:  # not JSON, or cut inside a multi-byte character (UnicodeDecodeError)
                print(f"{self.path}: dropping the last line, cut short by an interrupted run: "
                      f"{data[last_start:][:60]!r}")
                with open(self.path, "r+b") as f:
                    f.truncate(last_start)
                data, complete = data[:last_start], True
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{lineno}: not valid JSON ({err.msg}); "
                                 f"fix the line or run with --no-resume") from err
            if not isinstance(record, dict) or "question_id" not in record:
                raise ValueError(f"{self.path}:{lineno}: not an answer (no 'question_id'): {line[:80]!r}")
            self.done.setdefault(answer_key(record), []).append(lineno)
        return not complete

    def check_belongs_to(self, items: Sequence[Item]) -> None:
        """The answers already in the file are all for these items (a question that the question
        file repeats may have one answer per line).

        Raises:
            ValueError: names the foreign question ids (another question file, chunk or prompt
                option), or a question answered more often than the question file asks it.
        """
        asked: dict[tuple, int] = {}
        for item in items:
            asked[item.key] = asked.get(item.key, 0) + 1
        foreign = [k for k in self.done if k not in asked]
        if foreign:
            raise ValueError(
                f"{self.path} already has {len(foreign)} answer(s) for questions not in this run "
                f"(question_id {format_ids([k[0] for k in foreign], 5)}): it belongs to another question file, "
                f"chunk or prompt option. Pass another --answers-file, or --no-resume to overwrite it.")
        extra = [(k, lines) for k, lines in self.done.items() if len(lines) > asked[k]]
        if extra:
            key, lines = extra[0]
            raise ValueError(
                f"{self.path}: question_id {key[0]!r} is answered {len(lines)} times (lines "
                f"{', '.join(map(str, lines))}) but asked {asked[key]} time(s) in this run"
                f"{f' ({len(extra) - 1} more such questions)' if len(extra) > 1 else ''}. "
                f"Remove the extra lines, or run with --no-resume to answer everything again.")

    def pending(self, items: Sequence[Item]) -> list[Item]:
        """The items still to answer: for each question, those past the answers already written."""
        used: dict[tuple, int] = {}
        todo = []
        for item in items:
            used[item.key] = used.get(item.key, 0) + 1
            if used[item.key] > len(self.done.get(item.key, ())):
                todo.append(item)
        return todo

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # an interrupted run keeps every answer written so far

    def close(self) -> None:
        self._file.close()


@dataclass
class RunSummary:
    """What a run did: ``resumed`` answers were already in the file, ``generated`` are new."""

    total: int
    resumed: int
    generated: int
    answers_file: str


# generate_fn(batch items, per-row pixels, per-row sizes) -> texts
GenerateFn = Callable[[Sequence[Item], list, list], list]


def run_items(items: Sequence[Item], loaded: LoadedModel, args: argparse.Namespace,
              generate_fn: GenerateFn | None = None, extra_fields: Callable[[str], dict] | None = None) -> RunSummary:
    """Answers every item not yet in ``args.answers_file``, ``args.batch_size`` at a time.

    Args:
        items: this chunk's items, in question order.
        loaded: the model (see :func:`load_model`).
        args: the runner's arguments (answers_file, batch_size, resume, num_workers, decoding).
        generate_fn: replaces the plain :func:`generate_texts` call (e.g. ScienceQA's answer prompter).
        extra_fields: more fields of an answer line from its text (e.g. Q-Bench's ``response``).
    Returns:
        A :class:`RunSummary`.
    """
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    settings = GenerationSettings.from_args(args)
    answers = AnswerFile(args.answers_file, resume=args.resume)
    try:
        answers.check_belongs_to(items)
        todo = answers.pending(items)
        if generate_fn is None:
            def generate_fn(batch, pixels, sizes):
                return generate_texts(loaded.model, loaded.tokenizer, [i.prompt for i in batch], pixels, sizes,
                                      settings, loaded.stop_str)

        num_workers = args.num_workers
        if num_workers is None:
            num_workers = 4 if loaded.model.device.type == "cuda" else 0
        loader = DataLoader(_ImageDataset(todo, loaded.image_processor, loaded.model.config),
                            batch_size=args.batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate)
        resumed = len(items) - len(todo)
        with tqdm(total=len(items), initial=resumed, unit="q", desc=os.path.basename(answers.path)) as progress:
            for batch in loader:
                batch_items = [todo[index] for index, _, _ in batch]
                texts = generate_fn(batch_items, [pixels for _, pixels, _ in batch], [size for _, _, size in batch])
                for item, text in zip(batch_items, texts):
                    answers.write({**item.fields, **(extra_fields(text) if extra_fields else {}), "text": text,
                                   "answer_id": new_answer_id(), "model_id": loaded.model_name, "metadata": {}})
                progress.update(len(batch_items))
    finally:
        answers.close()
    return RunSummary(total=len(items), resumed=resumed, generated=len(todo), answers_file=answers.path)


def report(summary: RunSummary) -> None:
    """One line on what the run did."""
    resumed = f" ({summary.resumed} already there)" if summary.resumed else ""
    print(f"{summary.answers_file}: {summary.total} answers{resumed}, {summary.generated} generated")


# ----------------------------------------------------------------------------- jsonl question files


def eval_question_file(args: argparse.Namespace, loaded: LoadedModel | None = None) -> RunSummary:
    """Answer a jsonl question file ``{"question_id", "image"?, "text"}`` (``model_vqa_loader`` and
    ``model_vqa``). The answer's ``prompt`` is the question text, as upstream (MME needs it).

    Args:
        args: the runner's arguments.
        loaded: an already loaded model (otherwise loaded from ``args.model_path``).
    """
    questions = get_chunk(load_questions(args.question_file), args.num_chunks, args.chunk_idx)
    images = [(q["question_id"], os.path.join(args.image_folder, q["image"])) for q in questions if q.get("image")]
    check_images(images)
    loaded = loaded or load_model(args)
    config = loaded.model.config
    items = []
    for q in questions:
        image_file = os.path.join(args.image_folder, q["image"]) if q.get("image") else None
        message = image_prompt(q["text"], config) if image_file else q["text"]
        items.append(Item(fields={"question_id": q["question_id"], "prompt": q["text"]},
                          prompt=chat_prompt(loaded.conv_mode, message), image_file=image_file))
    return run_items(items, loaded, args)
