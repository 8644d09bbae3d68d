"""Turns one LLaVA conversation into ``input_ids`` and ``labels`` (upstream's label masking).

Templates come from :mod:`llava.conversation` (the only place that knows prompt formats):

* ``plain`` (pretraining): the human turn becomes just the image; the target is the caption
  plus ``"\\n"``; everything before the caption is masked.
* ``v1`` / ``vicuna_v1`` and any other template whose prompt grows turn by turn (``chatml``,
  ``mpt``, ...): only the assistant replies, each with its stop string (``</s>``,
  ``<|im_end|>``), are trained on; the system prompt, the user turns and the role names are
  masked with ``IGNORE_INDEX``.

Differs from upstream on purpose: upstream finds the reply boundaries by re-tokenizing each round
and counting tokens, which drifts with tokenizer versions (the "tokenization mismatch" that then
silently zeroes the sample). Here the full prompt is tokenized once and each token is labelled by
its character offsets, so ids equal ``tokenizer_image_token(prompt)`` and the mask is exact. A
sample whose tokens cannot be aligned with the reply boundaries (a token spanning prompt text
and reply text, or a reply with no tokens) is returned with ``mismatch`` set; the caller counts
it and reports it, never hides it.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
)
from llava.conversation import Conversation, SeparatorStyle, conv_templates

# Templates whose prompt for the first k messages is a prefix of the prompt for all of them.
INCREMENTAL_STYLES = (SeparatorStyle.SINGLE, SeparatorStyle.TWO, SeparatorStyle.MPT, SeparatorStyle.CHATML)
# A marker that cannot occur in real text, used to find where a reply sits in the rendered prompt.
_SENTINEL = "\u0000\u0001REPLY\u0001\u0000"


@dataclass
class Tokenized:
    """One training sample as token ids.

    Attributes:
        input_ids: ids with one ``IMAGE_TOKEN_INDEX`` per image.
        labels: same length; ``IGNORE_INDEX`` where the model is not trained.
        mismatch: ``None``, or why the labels could not be aligned (then every label is ignored).
        cut_labels: answer tokens cut off to fit ``model_max_length`` (0 when nothing was cut).
    """

    input_ids: list[int]
    labels: list[int]
    mismatch: str | None = None
    cut_labels: int = 0


def conversation_template(version: str) -> Conversation:
    """The template for ``--version``: a name in ``conv_templates`` (upstream's names, ``v1``,
    ``plain``, ``mpt``, ... included).

    Raises:
        ValueError: no template has that name, or the template cannot be used for training (it is
            not incremental).
    """
    if version not in conv_templates:
        # Differs from upstream on purpose: upstream trains an unknown name (a typo) with vicuna_v1.
        raise ValueError(f"--version {version!r} names no conversation template; known: "
                         f"{', '.join(sorted(conv_templates))}")
    conv = conv_templates[version]
    if conv.sep_style != SeparatorStyle.PLAIN and conv.sep_style not in INCREMENTAL_STYLES:
        raise ValueError(f"--version {version!r} ({conv.sep_style.name} separators) is not supported for training; "
                         f"use plain, v1 (vicuna_v1) or chatml")
    return conv


def conv_mode_for_version(version: str) -> str | None:
    """The ``conv_mode`` recorded in the config for inference: ``v1`` -> ``vicuna_v1``; ``plain``
    (a pretraining format, not a chat template) -> ``None`` (keep whatever is there).

    Raises:
        ValueError: as :func:`conversation_template`.
    """
    conv = conversation_template(version)
    if conv.sep_style == SeparatorStyle.PLAIN:
        return None
    if conv is conv_templates["vicuna_v1"]:
        return "vicuna_v1"
    return version


def preprocess_multimodal(turns: list[dict], *, mm_use_im_start_end: bool, version: str = "v1") -> list[dict]:
    """Moves ``<image>`` to the start of its turn followed by a newline (upstream's rule).

    Returns new turn dicts; the input is not modified (the dataset keeps its records).
    """
    out = []
    for turn in turns:
        value = turn["value"]
        if DEFAULT_IMAGE_TOKEN in value:
            value = (DEFAULT_IMAGE_TOKEN + "\n" + value.replace(DEFAULT_IMAGE_TOKEN, "").strip()).strip()
            if "mmtag" in version:
                value = value.replace(DEFAULT_IMAGE_TOKEN, "<Image>" + DEFAULT_IMAGE_TOKEN + "</Image>")
        if mm_use_im_start_end:
            value = value.replace(DEFAULT_IMAGE_TOKEN,
                                  DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
        out.append({**turn, "value": value})
    return out


def tokenize_with_offsets(text: str, tokenizer) -> tuple[list[int], list[tuple[int, int]]]:
    """``tokenizer_image_token(text)`` plus each token's character span in ``text``.

    The ``IMAGE_TOKEN_INDEX`` token spans its ``<image>`` tag; a BOS spans nothing.

    Raises:
        ValueError: the tokenizer gives no offsets (a slow, Python-only tokenizer).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"Training needs a fast tokenizer (character offsets); {type(tokenizer).__name__} is not")
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    start = 0
    for i, chunk in enumerate(text.split(DEFAULT_IMAGE_TOKEN)):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
            spans.append((start - len(DEFAULT_IMAGE_TOKEN), start))
        enc = tokenizer(chunk, return_offsets_mapping=True)
        chunk_ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if i > 0 and bos is not None and chunk_ids and chunk_ids[0] == bos:
            chunk_ids, offsets = chunk_ids[1:], offsets[1:]
        ids += chunk_ids
        spans += [(a + start, b + start) for a, b in offsets]
        start += len(chunk) + len(DEFAULT_IMAGE_TOKEN)
    return ids, spans


def label_tokens(text: str, ids: list[int], spans: list[tuple[int, int]],
                 targets: list[tuple[int, int]]) -> Tokenized:
    """Labels each token that overlaps a target character span; everything else is ignored.

    A token that starts in the prompt is a target only if the prompt part is whitespace (the
    space a word-piece tokenizer glues to the reply's first word, as upstream trains it).
    """
    labels = [IGNORE_INDEX] * len(ids)
    hits = [0] * len(targets)
    for j, (tok, (a, b)) in enumerate(zip(ids, spans)):
        if tok == IMAGE_TOKEN_INDEX or b <= a:
            continue
        for k, (t0, t1) in enumerate(targets):
            if a < t1 and b > t0:
                if a < t0 and text[a:t0].strip():
                    return Tokenized(ids, [IGNORE_INDEX] * len(ids),
                                     f"token {j} spans prompt text {text[a:t0]!r} and reply text {text[t0:b]!r}")
                if b > t1 and text[t1:b].strip():
                    return Tokenized(ids, [IGNORE_INDEX] * len(ids),
                                     f"token {j} spans reply text {text[a:t1]!r} and prompt text {text[t1:b]!r}")
                labels[j] = tok
                hits[k] += 1
                break
    for k, n in enumerate(hits):
        if n == 0:
            return Tokenized(ids, [IGNORE_INDEX] * len(ids), f"reply {k} ({text[targets[k][0]:targets[k][1]]!r:.40}) "
                                                             f"has no tokens")
    return Tokenized(ids, labels)


def preprocess_plain(turns: list[dict], tokenizer, conv: Conversation) -> Tokenized:
    """Pretraining: ``<image>`` + caption + ``sep``; the target is the caption and ``sep``."""
    if turns and turns[0]["from"] != "human":
        turns = turns[1:]
    caption = turns[1]["value"]
    prompt = DEFAULT_IMAGE_TOKEN  # upstream drops the instruction and any start/end markers here
    text = prompt + caption + conv.sep
    ids, spans = tokenize_with_offsets(text, tokenizer)
    return label_tokens(text, ids, spans, [(len(prompt), len(text))])


def preprocess_conversation(turns: list[dict], tokenizer, conv: Conversation) -> Tokenized:
    """Chat templates (``v1``, ``chatml``, ...): only assistant replies and their stop string are
    trained on."""
    roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
    if turns and turns[0]["from"] != "human":
        turns = turns[1:]  # upstream skips a leading assistant turn
    messages = [[roles[t["from"]], t["value"]] for t in turns]
    full = _render(conv, messages)
    stop = conv.stop_str or ""
    targets = []
    for k, (role, reply) in enumerate(messages):
        if role != conv.roles[1]:
            continue
        marked = _render(conv, messages[:k] + [[role, _SENTINEL]])
        start = marked.index(_SENTINEL)
        tail = marked[start + len(_SENTINEL):]
        if not full.startswith(marked[:start]) or full[start:start + len(reply) + len(tail)] != reply + tail:
            raise ValueError(f"template {conv.version!r} does not render turn by turn; cannot train on it")
        end = start + len(reply) + (len(stop) if stop and tail.startswith(stop) else 0)
        targets.append((start, end))
    ids, spans = tokenize_with_offsets(full, tokenizer)
    return label_tokens(full, ids, spans, targets)


def _render(template: Conversation, messages: list[list]) -> str:
    conv = template.copy()
    conv.messages = [list(m) for m in messages]
    return conv.get_prompt()


def preprocess(turns: list[dict], tokenizer, conv: Conversation) -> Tokenized:
    """Dispatches on the template: ``plain`` or a chat template."""
    if conv.sep_style == SeparatorStyle.PLAIN:
        return preprocess_plain(turns, tokenizer, conv)
    return preprocess_conversation(turns, tokenizer, conv)
