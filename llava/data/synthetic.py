"""A seeded synthetic visual-QA dataset drawn with PIL, for the CPU quickstart.

Every image shows one of three kinds of scene on a light, slightly noisy background:

* ``object``: one large shape; questions about its ``color``, ``shape`` and ``position``
  (the horizontal third that holds the shape's centre: left / center / right);
* ``count``: 1-4 identical small shapes that never touch; ``count``, ``color``, ``shape``;
* ``word``: a short upper-case word; ``word`` and ``color`` (of the letters).

Each question type has one short answer (a single word or a digit). Shapes and letters are
drawn in the exact palette colour without anti-aliasing, so tests can check answers against
pixels. The generator writes, under ``out_dir``::

    images/{stage1,stage2,eval}/NNNNNN.png   image_folder for training and eval is images/
    stage0.json             per-image attribute labels of every training image (vision tower)
    stage1.json             LLaVA pretraining data (one caption per image)
    stage2.json             LLaVA instruction data (multi-turn short answers, ~5% text-only)
    eval/questions.jsonl    LLaVA eval question file: question_id, image, text, category
    eval/annotations.json   {question_id: {"answer", "category", "image"}}
    meta.json               vocabularies, palette, counts, config

Every sample is drawn from its own generator seeded by ``(seed, split, index)``, so the output
is reproducible byte for byte and sample ``i`` of a split does not change when the number of
samples changes. Usage::

    python -m llava.data.synthetic --out playground/synthetic --num-stage1 2000 \
        --num-stage2 2000 --num-eval 500 --image-size 112 --seed 0
    python -m llava.data.synthetic --out playground/synthetic --score answers.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

FORMAT_VERSION = 1

#: Appended to every short-answer question, as in LLaVA-1.5's VQA data and eval prompts.
ANSWER_PROMPT = "Answer the question using a single word or phrase."
#: The question of a stage-2 caption turn.
CAPTION_REQUEST = "Describe the image briefly."

#: Label of an attribute that a kind of image does not have (torch cross_entropy's default).
IGNORE_LABEL = -100

# Saturated, well separated colours; none can arise from the light grey background noise.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 205, 30),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
POSITIONS: tuple[str, ...] = ("left", "center", "right")
COUNTS: tuple[str, ...] = ("1", "2", "3", "4")
#: Answers are lower case; the image shows the word in upper case.
WORDS: tuple[str, ...] = ("cat", "dog", "sun", "box", "car", "hat", "cup", "pen")

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "position", "count", "word")
VOCAB: dict[str, tuple[str, ...]] = {
    "color": COLORS,
    "shape": SHAPES,
    "position": POSITIONS,
    "count": COUNTS,
    "word": WORDS,
}
#: Which question types each kind of image answers (the others are labelled IGNORE_LABEL).
KINDS: dict[str, tuple[str, ...]] = {
    "object": ("color", "shape", "position"),
    "count": ("count", "color", "shape"),
    "word": ("word", "color"),
}

_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
            "star": "stars", "cross": "crosses"}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten")

_STAGE1_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Write a terse but informative summary of the picture.",
)

# Templates name no attribute, so one turn never gives away another turn's answer.
_QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": (
        "What color {is_} the {noun}?",
        "What is the color of the {noun}?",
        "Which color {does} the {noun} have?",
    ),
    "shape": (
        "What shape {is_} the {noun}?",
        "What is the shape of the {noun}?",
        "Which shape is shown in the image?",
    ),
    "position": (
        "{Is} the {noun} on the left, in the center, or on the right?",
        "Where {is_} the {noun} in the image: left, center, or right?",
        "In which part of the image is the {noun}: left, center, or right?",
    ),
    "count": (
        "How many shapes are there?",
        "How many objects are in the image?",
        "How many shapes can you see?",
    ),
    "word": (
        "What word is written in the image?",
        "What does the text say?",
        "Which word is shown in the image?",
    ),
}
_NOUNS = {
    ("object", "color"): ("object", "shape"),
    ("object", "shape"): ("object",),
    ("object", "position"): ("object", "shape"),
    ("count", "color"): ("shapes", "objects"),
    ("count", "shape"): ("objects",),
    ("word", "color"): ("text", "word", "letters"),
}
_PLURAL_NOUNS = {"shapes", "objects", "letters"}

_SPLIT_CODES = {"stage1": 1, "stage2": 2, "eval": 3, "text": 4, "stage0": 5}


@dataclass
class SyntheticConfig:
    """What to generate.

    Args:
        num_stage1: caption samples (one image each) for projector pretraining.
        num_stage2: instruction samples, of which ``text_only_fraction`` have no image.
        num_eval: held-out eval questions (one image each), balanced over question types.
        image_size: side of the square images in pixels.
        seed: base seed; each sample's generator is seeded by ``(seed, split, index)``.
        text_only_fraction: share of stage-2 samples with no image (LLaVA's mix has some).
        caption_turn_prob: chance that a stage-2 image sample also asks for a description.
        noise_std: strength of the low-frequency background mottling (0: tint and gradient only).
        kind_weights: sampling weights of the ``object``, ``count``, ``word`` kinds in the
            training splits (eval picks a kind that answers each balanced question type).
    """

    num_stage1: int = 1000
    num_stage2: int = 1000
    num_eval: int = 250
    image_size: int = 112
    seed: int = 0
    text_only_fraction: float = 0.05
    caption_turn_prob: float = 0.15
    noise_std: float = 4.0
    kind_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)

    def __post_init__(self) -> None:
        for name in ("num_stage1", "num_stage2", "num_eval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 pixels, got {self.image_size}")
        if not 0.0 <= self.text_only_fraction <= 1.0:
            raise ValueError(f"text_only_fraction must be in [0, 1], got {self.text_only_fraction}")
        if not 0.0 <= self.caption_turn_prob <= 1.0:
            raise ValueError(f"caption_turn_prob must be in [0, 1], got {self.caption_turn_prob}")
        if len(self.kind_weights) != len(KINDS) or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ValueError(f"kind_weights needs {len(KINDS)} non-negative weights for "
                             f"{list(KINDS)}, got {self.kind_weights}")
        self.kind_weights = tuple(float(w) for w in self.kind_weights)


# --------------------------------------------------------------------------------------------
# Sampling and drawing


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_CODES[split], index)))


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def sample_attributes(rng: np.random.Generator, kind: str) -> dict[str, str]:
    """Draw the answerable attributes of one image of ``kind``.

    Returns:
        ``{question_type: answer}`` for the types in ``KINDS[kind]`` plus ``"kind"``.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown image kind {kind!r}; known: {sorted(KINDS)}")
    attrs = {"kind": kind}
    for qtype in KINDS[kind]:
        attrs[qtype] = _pick(rng, VOCAB[qtype])
    return attrs


def _shape_polygon(shape: str, cx: float, cy: float, size: float) -> list[list[tuple[float, float]]]:
    """Polygons (one or more) of ``shape`` inside the ``size`` x ``size`` box centred at (cx, cy)."""
    r = size / 2
    if shape == "square":
        return [[(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]]
    if shape == "triangle":  # points up; the box centre lies inside it
        return [[(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.5
            ang = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return [pts]
    if shape == "cross":
        t = size / 6  # half the arm thickness
        return [[(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy + r), (cx - t, cy + r)],
                [(cx - r, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx - r, cy + t)]]
    raise ValueError(f"Unknown shape {shape!r}; known: {list(SHAPES)}")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float,
                fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        r = size / 2
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        return
    for poly in _shape_polygon(shape, cx, cy, size):
        draw.polygon(poly, fill=fill)


_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}


def _stroke(image_size: int) -> int:
    return max(1, image_size // 56)  # thicker strokes keep letters legible at low resolution


def _word_layout(text: str, font: ImageFont.FreeTypeFont, image_size: int
                 ) -> tuple[list[tuple[str, int]], tuple[int, int, int, int]]:
    """Letter origins ``[(char, x)]`` and the word's ``(x0, y0, x1, y1)`` box, origin at (0, 0).

    Letters are placed one by one with a gap, so they never touch (the bold stroke would
    otherwise merge them into one blob).
    """
    stroke, gap = _stroke(image_size), max(1, round(0.02 * image_size))
    letters, x, top, bottom = [], 0, None, None
    for ch in text:
        l, t, r, b = font.getbbox(ch, stroke_width=stroke)
        letters.append((ch, x - l))
        top = t if top is None else min(top, t)
        bottom = b if bottom is None else max(bottom, b)
        x += r - l + gap
    return letters, (0, top, x - gap, bottom)


def _font(image_size: int) -> ImageFont.FreeTypeFont:
    """The largest default-font size whose widest word fits in 86% of the image."""
    if image_size not in _FONT_CACHE:
        if not features.check("freetype2"):
            raise RuntimeError("Pillow was built without FreeType; the synthetic word images need "
                               "ImageFont.load_default(size=...) (any pip wheel of Pillow>=10.1 has it)")
        size = max(8, round(0.4 * image_size))
        while True:
            font = ImageFont.load_default(size=size)
            widest = max(_word_layout(w.upper(), font, image_size)[1][2] for w in WORDS)
            if widest <= 0.86 * image_size or size <= 8:
                break
            size -= 1
        _FONT_CACHE[image_size] = font
    return _FONT_CACHE[image_size]


def _background(w: int, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """A light background, (w, w, 3) uint8: a random tint, a gentle linear gradient and
    low-frequency mottling (per-pixel noise would make PNG encoding 5x slower and files 5x larger).

    Each channel is (tint + gradient) + mottling in float64 (``gx`` and ``gy`` are float64),
    rounded and clipped, computed one channel plane at a time and in place: the pixels of the
    broadcast (H, W, 3) expression in about half the time (stage 0 draws 38,400 images).
    """
    tint = (rng.integers(215, 246) + rng.integers(-6, 7, size=3)).astype(np.float32)
    ramp = np.linspace(-0.5, 0.5, w, dtype=np.float32)
    gx, gy = rng.uniform(-16.0, 16.0, size=2)
    gradient = gx * ramp[None, :] + gy * ramp[:, None]  # (H, W)
    mottling = None
    if noise_std > 0:
        grid = max(2, w // 8)
        coarse = rng.normal(0.0, noise_std, size=(grid, grid)).astype(np.float32)
        mottling = np.asarray(Image.fromarray(coarse).resize((w, w), Image.BILINEAR))
    bg = np.empty((3, w, w), dtype=gradient.dtype)
    for c in range(3):
        np.add(tint[c], gradient, out=bg[c])
        if mottling is not None:
            bg[c] += mottling
    np.clip(np.rint(bg, out=bg), 0, 255, out=bg)
    return np.ascontiguousarray(bg.astype(np.uint8).transpose(1, 2, 0))


def render_image(attrs: Mapping[str, str], image_size: int, rng: np.random.Generator,
                 noise_std: float = 4.0) -> tuple[Image.Image, list[list[int]]]:
    """Draw one image from its attributes.

    Args:
        attrs: output of :func:`sample_attributes`.
        image_size: side in pixels.
        rng: generator for the layout (size, placement, background); consumed deterministically.
        noise_std: strength of the low-frequency background mottling.

    Returns:
        ``(image, boxes)``: an RGB image and the ``[x0, y0, x1, y1]`` pixel box of each drawn
        shape (the text box for word images).
    """
    w = image_size
    image = Image.fromarray(_background(w, rng, noise_std))
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"  # no anti-aliasing: every letter pixel has the exact palette colour
    fill = PALETTE[attrs["color"]]
    kind = attrs["kind"]
    boxes: list[list[int]] = []

    if kind == "object":
        size = rng.uniform(0.25, 0.32) * w
        third = POSITIONS.index(attrs["position"])
        margin = 0.03 * w
        cx = (2 * third + 1) * w / 6 + rng.uniform(-0.05, 0.05) * w
        cx = min(max(cx, size / 2 + margin), w - size / 2 - margin)
        cy = rng.uniform(size / 2 + margin, w - size / 2 - margin)
        cx, cy = round(cx), round(cy)  # integer centres: the centre pixel is exactly inside
        _draw_shape(draw, attrs["shape"], cx, cy, size, fill)
        boxes.append(_box(cx, cy, size))
    elif kind == "count":
        n = int(attrs["count"])
        size = rng.uniform(0.15, 0.19) * w
        gap = max(3.0, 0.04 * w)
        lo, hi = size / 2 + 2, w - size / 2 - 2
        centres: list[tuple[int, int]] = []
        while len(centres) < n:  # rejection sampling; 4 boxes of <=0.19w always fit
            c = (round(rng.uniform(lo, hi)), round(rng.uniform(lo, hi)))
            if all(max(abs(c[0] - o[0]), abs(c[1] - o[1])) > size + gap for o in centres):
                centres.append(c)
        for cx, cy in centres:
            _draw_shape(draw, attrs["shape"], cx, cy, size, fill)
            boxes.append(_box(cx, cy, size))
    elif kind == "word":
        font, stroke = _font(w), _stroke(w)
        letters, (x0, y0, x1, y1) = _word_layout(attrs["word"].upper(), font, w)
        jx, jy = rng.uniform(-0.05, 0.05, size=2) * w
        ox = round((w - (x1 - x0)) / 2 - x0 + jx)
        oy = round((w - (y1 - y0)) / 2 - y0 + jy)
        for ch, x in letters:
            draw.text((ox + x, oy), ch, font=font, fill=fill, stroke_width=stroke, stroke_fill=fill)
        boxes.append([x0 + ox, y0 + oy, x1 + ox, y1 + oy])
    else:
        raise ValueError(f"Unknown image kind {kind!r}; known: {sorted(KINDS)}")
    return image, boxes


def _box(cx: float, cy: float, size: float) -> list[int]:
    r = size / 2
    return [math.floor(cx - r), math.floor(cy - r), math.ceil(cx + r), math.ceil(cy + r)]


# --------------------------------------------------------------------------------------------
# Text


def caption(attrs: Mapping[str, str]) -> str:
    """A one-sentence caption that names every answerable attribute of the image."""
    kind, color = attrs["kind"], attrs["color"]
    if kind == "object":
        where = "in the center" if attrs["position"] == "center" else f"on the {attrs['position']}"
        article = "An" if color[0] in "aeiou" else "A"
        return f"{article} {color} {attrs['shape']} {where}."
    if kind == "count":
        n = int(attrs["count"])
        noun = attrs["shape"] if n == 1 else _PLURALS[attrs["shape"]]
        return f"{_NUMBER_WORDS[n].capitalize()} {color} {noun}."
    if kind == "word":
        return f'The word "{attrs["word"].upper()}" written in {color}.'
    raise ValueError(f"Unknown image kind {kind!r}; known: {sorted(KINDS)}")


def question(rng: np.random.Generator, kind: str, qtype: str) -> str:
    """A question of type ``qtype`` about an image of ``kind`` (without the answer prompt)."""
    if qtype not in KINDS[kind]:
        raise ValueError(f"Images of kind {kind!r} have no {qtype!r} answer; they answer {KINDS[kind]}")
    template = _pick(rng, _QUESTIONS[qtype])
    if "{noun}" not in template:
        return template
    return _fill(template, _pick(rng, _NOUNS[(kind, qtype)]))


def _fill(template: str, noun: str) -> str:
    plural = noun in _PLURAL_NOUNS
    return template.format(noun=noun, is_="are" if plural else "is", Is="Are" if plural else "Is",
                           does="do" if plural else "does")


def longest_samples(measure: Callable[[str], int]) -> dict[str, dict]:
    """The longest stage-1 and stage-2 samples the generator can write, whatever the seed: each
    text the one ``measure`` (e.g. a token count) finds longest among all it can draw, and the
    stage-2 chat with a turn for every question type of its kind plus a caption turn. Text-only
    chats (at most two short questions, no image) are shorter.

    Returns:
        ``{"stage1": sample, "stage2": sample}`` in the format of stage1.json / stage2.json.
    """
    def longest(texts: Iterable[str]) -> str:
        return max(texts, key=measure)

    captions = {kind: longest(caption({"kind": kind, **dict(zip(KINDS[kind], values))})
                              for values in itertools.product(*(VOCAB[q] for q in KINDS[kind])))
                for kind in KINDS}
    stage1 = [{"from": "human", "value": "<image>\n" + longest(_STAGE1_INSTRUCTIONS)},
              {"from": "gpt", "value": longest(captions.values())}]
    chats = []
    for kind, qtypes in KINDS.items():
        questions = [longest(_fill(t, noun) for t in _QUESTIONS[q] for noun in _NOUNS.get((kind, q), ("",)))
                     for q in qtypes]
        turns = [(f"{text}\n{ANSWER_PROMPT}", longest(VOCAB[q])) for text, q in zip(questions, qtypes)]
        turns.append((CAPTION_REQUEST, captions[kind]))
        chats.append([m for j, (q, a) in enumerate(turns)
                      for m in ({"from": "human", "value": ("<image>\n" if j == 0 else "") + q},
                                {"from": "gpt", "value": a})])
    stage2 = max(chats, key=lambda chat: sum(measure(m["value"]) for m in chat))
    return {"stage1": {"id": "longest-stage1", "image": "longest.png", "conversations": stage1},
            "stage2": {"id": "longest-stage2", "image": "longest.png", "conversations": stage2}}


def _text_only(rng: np.random.Generator) -> tuple[str, str]:
    """A question needing no image, with its short answer."""
    task = int(rng.integers(4))
    if task == 0:
        shape, sides = _pick(rng, (("triangle", "3"), ("square", "4")))
        return f"How many sides does a {shape} have?", sides
    if task == 1:
        a, b = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        return f"What is {a} plus {b}?", str(a + b)
    if task == 2:
        word = _pick(rng, WORDS)
        return f"Write the word {word.upper()} in lowercase letters.", word
    pair, mixed = _pick(rng, ((("blue", "yellow"), "green"), (("red", "yellow"), "orange"),
                              (("red", "blue"), "purple")))
    return f"What color do you get by mixing {pair[0]} and {pair[1]} paint?", mixed


def stage0_labels(attrs: Mapping[str, str]) -> dict[str, int]:
    """Per-question-type class indices into :data:`VOCAB`; ``IGNORE_LABEL`` where not applicable."""
    return {q: VOCAB[q].index(attrs[q]) if q in attrs else IGNORE_LABEL for q in QUESTION_TYPES}


def stage0_batch(start: int, count: int, config: SyntheticConfig | None = None
                 ) -> tuple[list[Image.Image], list[dict[str, int]]]:
    """Fresh labelled images for pretraining a vision tower on more images than the dataset holds.

    Images ``start .. start + count - 1`` of the ``stage0`` split: drawn like the dataset's images
    (same size, kinds, noise and seed as ``config``), never written to disk, and disjoint from
    the stage-1, stage-2 and eval images. The same arguments give the same images.

    Returns:
        ``(images, labels)``: RGB images and their :func:`stage0_labels`.
    """
    cfg = config or SyntheticConfig()
    images, labels = [], []
    for i in range(start, start + count):
        rng = _rng(cfg.seed, "stage0", i)
        attrs = sample_attributes(rng, _kind(rng, cfg.kind_weights))
        images.append(render_image(attrs, cfg.image_size, rng, cfg.noise_std)[0])
        labels.append(stage0_labels(attrs))
    return images, labels


def class_labels(meta: Mapping[str, Any] | str | Path | None = None) -> dict[str, list[str]]:
    """Class names of each stage-0 classification head, in label-index order.

    Args:
        meta: a ``meta.json`` path or its loaded dict; ``None`` gives this module's vocabularies.

    Returns:
        ``{question_type: [name of class 0, name of class 1, ...]}``.
    """
    if meta is None:
        return {q: list(v) for q, v in VOCAB.items()}
    if isinstance(meta, (str, Path)):
        meta = json.loads(Path(meta).read_text())
    return {q: list(v) for q, v in meta["vocab"].items()}


# --------------------------------------------------------------------------------------------
# Generation


def _kind(rng: np.random.Generator, weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=np.float64)
    return list(KINDS)[int(rng.choice(len(KINDS), p=p / p.sum()))]


def _save_image(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", compress_level=1)  # 2x faster than the default, ~same size


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _write_json_list(path: Path, rows: list[Any]) -> None:
    """A JSON list with one sample per line: valid JSON, compact, and easy to grep or diff."""
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + ("\n]\n" if rows else "]\n"))


def generate(out_dir: str | Path, config: SyntheticConfig | None = None) -> dict[str, Any]:
    """Write the dataset described in the module docstring under ``out_dir``.

    Args:
        out_dir: output directory (created; existing files of the same names are overwritten).
        config: what to generate; defaults to ``SyntheticConfig()``.

    Returns:
        ``{"out_dir", "image_folder", "stage0", "stage1", "stage2", "eval_questions",
        "eval_annotations", "meta"}`` as path strings plus ``"counts"`` (a dict of ints).
    """
    cfg = config or SyntheticConfig()
    out = Path(out_dir)
    # meta.json is written last and vouches for a finished dataset (the quickstart's --reuse reads it):
    # an earlier one goes first, so that a run stopped halfway leaves no finished-looking folder.
    (out / "meta.json").unlink(missing_ok=True)
    image_root = out / "images"
    for split in ("stage1", "stage2", "eval"):
        (image_root / split).mkdir(parents=True, exist_ok=True)
        # An earlier, larger run in the same folder would leave images that no file refers to (and that
        # the quickstart's --reuse check would count): the generator's own names are cleared first.
        for stale in (image_root / split).glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
            stale.unlink()
    (out / "eval").mkdir(parents=True, exist_ok=True)
    size = cfg.image_size

    stage0: list[dict[str, Any]] = []

    def make_image(split: str, index: int, rng: np.random.Generator, kind: str) -> tuple[str, dict]:
        attrs = sample_attributes(rng, kind)
        image, boxes = render_image(attrs, size, rng, cfg.noise_std)
        rel = f"{split}/{index:06d}.png"
        _save_image(image, image_root / rel)
        if split != "eval":
            stage0.append({"id": f"{split}-{index:06d}", "image": rel, "kind": kind,
                           "labels": stage0_labels(attrs), "boxes": boxes})
        return rel, attrs

    stage1 = []
    for i in range(cfg.num_stage1):
        rng = _rng(cfg.seed, "stage1", i)
        rel, attrs = make_image("stage1", i, rng, _kind(rng, cfg.kind_weights))
        stage1.append({"id": f"stage1-{i:06d}", "image": rel, "conversations": [
            {"from": "human", "value": "<image>\n" + _pick(rng, _STAGE1_INSTRUCTIONS)},
            {"from": "gpt", "value": caption(attrs)},
        ]})

    num_text = round(cfg.num_stage2 * cfg.text_only_fraction)
    # Spread the text-only samples evenly through the file, as in a shuffled mix.
    text_slots = {math.floor((j + 0.5) * cfg.num_stage2 / num_text) for j in range(num_text)}
    stage2 = []
    n_image = n_text = 0
    for i in range(cfg.num_stage2):
        if i in text_slots:
            rng = _rng(cfg.seed, "text", n_text)
            turns = [_text_only(rng) for _ in range(int(rng.integers(1, 3)))]
            conv = []
            for q, a in turns:
                conv += [{"from": "human", "value": f"{q}\n{ANSWER_PROMPT}"}, {"from": "gpt", "value": a}]
            stage2.append({"id": f"text-{n_text:06d}", "conversations": conv})
            n_text += 1
            continue
        rng = _rng(cfg.seed, "stage2", n_image)
        rel, attrs = make_image("stage2", n_image, rng, _kind(rng, cfg.kind_weights))
        qtypes = list(KINDS[attrs["kind"]])
        order = [qtypes[j] for j in rng.permutation(len(qtypes))][: int(rng.integers(1, len(qtypes) + 1))]
        turns = [(f"{question(rng, attrs['kind'], q)}\n{ANSWER_PROMPT}", attrs[q]) for q in order]
        if rng.random() < cfg.caption_turn_prob:
            turns.insert(int(rng.integers(len(turns) + 1)),
                         (CAPTION_REQUEST, caption(attrs)))
        conv = []
        for j, (q, a) in enumerate(turns):
            conv += [{"from": "human", "value": ("<image>\n" if j == 0 else "") + q},
                     {"from": "gpt", "value": a}]
        stage2.append({"id": f"stage2-{n_image:06d}", "image": rel, "conversations": conv})
        n_image += 1

    questions, annotations = [], {}
    for i in range(cfg.num_eval):
        rng = _rng(cfg.seed, "eval", i)
        category = QUESTION_TYPES[i % len(QUESTION_TYPES)]  # balanced categories
        kind = _pick(rng, [k for k in KINDS if category in KINDS[k]])
        rel, attrs = make_image("eval", i, rng, kind)
        qid = f"eval-{i:06d}"
        questions.append({"question_id": qid, "image": rel,
                          "text": f"{question(rng, kind, category)}\n{ANSWER_PROMPT}",
                          "category": category})
        annotations[qid] = {"answer": attrs[category], "category": category, "image": rel}

    paths = {
        "stage0": out / "stage0.json",
        "stage1": out / "stage1.json",
        "stage2": out / "stage2.json",
        "eval_questions": out / "eval" / "questions.jsonl",
        "eval_annotations": out / "eval" / "annotations.json",
        "meta": out / "meta.json",
    }
    counts = {
        "stage0_images": len(stage0),
        "stage1": len(stage1),
        "stage2": len(stage2),
        "stage2_images": n_image,
        "stage2_text_only": n_text,
        "stage2_turns": sum(len(s["conversations"]) // 2 for s in stage2),
        "eval": len(questions),
        "images": len(stage0) + len(questions),
    }
    # stage0.json: the header on top, then one sample per line.
    header = json.dumps({"tasks": class_labels(), "ignore_index": IGNORE_LABEL, "image_folder": "images"})
    paths["stage0"].write_text(header[:-1] + ', "samples": [\n'
                               + ",\n".join(json.dumps(r) for r in stage0) + "\n]}\n")
    _write_json_list(paths["stage1"], stage1)
    _write_json_list(paths["stage2"], stage2)
    paths["eval_questions"].write_text("".join(json.dumps(q) + "\n" for q in questions))
    _write_json(paths["eval_annotations"], annotations)
    meta = {
        "generator": "llava.data.synthetic",
        "format_version": FORMAT_VERSION,
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "config": asdict(cfg),
        "image_folder": "images",
        "question_types": list(QUESTION_TYPES),
        "vocab": class_labels(),
        "kinds": {k: list(v) for k, v in KINDS.items()},
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "word_case": "upper",
        "answer_prompt": ANSWER_PROMPT,
        "ignore_index": IGNORE_LABEL,
        "counts": counts,
        "eval_category_counts": {q: sum(a["category"] == q for a in annotations.values())
                                 for q in QUESTION_TYPES},
        "files": {k: p.relative_to(out).as_posix() for k, p in paths.items()},
    }
    _write_json(paths["meta"], meta)
    return {"out_dir": str(out), "image_folder": str(image_root),
            **{k: str(p) for k, p in paths.items()}, "counts": counts}


# --------------------------------------------------------------------------------------------
# Scoring

_ARTICLES = {"a", "an", "the"}
_SYNONYMS = {"centre": "center", "middle": "center", "colour": "color", "grey": "gray"}
_NUMBERS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}


def normalize_answer(text: str) -> list[str]:
    """Lower-case words of ``text`` without punctuation or articles; number words as digits."""
    words = re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split()
    words = [_NUMBERS.get(w, _SYNONYMS.get(w, w)) for w in words]
    return [w for w in words if w not in _ARTICLES]


def _is_correct(pred: list[str], gold: list[str], category_vocab: set[tuple[str, ...]]) -> bool:
    """The gold answer is the only answer of its category that ``pred`` names, alone ("red."),
    first ("red circle") or inside a sentence ("The color is red"); so listing the options
    ("left, center, or right") never scores, whichever comes first."""
    if not pred or not gold:
        return False
    found = {v for v in category_vocab | {tuple(gold)}
             if any(pred[i:i + len(v)] == list(v) for i in range(len(pred) - len(v) + 1))}
    return found == {tuple(gold)}


def _load_annotations(annotations: Mapping[str, Any] | str | Path) -> dict[str, dict]:
    if isinstance(annotations, (str, Path)):
        path = Path(annotations)
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return {str(r["question_id"]): r for r in rows}
        annotations = json.loads(path.read_text())
    return {str(k): dict(v) for k, v in annotations.items()}


def _load_answers(answers: str | Path | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(answers, (str, Path)):
        path = Path(answers)
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON line ({e.msg})") from e
        return rows
    return list(answers)


def score_answers(answers_jsonl: str | Path | Iterable[Mapping[str, Any]],
                  annotations: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Accuracy of LLaVA eval answers against the synthetic annotations.

    Matching is forgiving: case, punctuation and articles are ignored, number words equal
    digits ("three" == "3"), an answer followed by more words counts ("Red." / "red circle"),
    and so does a sentence that mentions the right answer and no other answer of its category
    ("The color is red"); an answer that names two of a category's answers ("left, center, or
    right") is wrong, whichever comes first. Questions with no answer line, or an empty one, are unanswered and
    count as wrong.

    Args:
        answers_jsonl: answer file path (lines with ``question_id`` and ``text``) or its rows.
        annotations: ``eval/annotations.json`` path (or a jsonl of rows with ``question_id``)
            or its dict ``{question_id: {"answer", "category"}}``.

    Returns:
        ``{"overall": {"accuracy", "correct", "total"}, "per_category": {category: {...}},
        "unanswered": int, "duplicates": int, "duplicate_ids": [question_id, ...]}`` (answers to a
        question already answered; its first answer counts); accuracy is in [0, 1].

    Raises:
        ValueError: an answer without ``question_id``, or answers to ids the annotations lack
            (names them: an answer file of another benchmark or dataset).
    """
    gold = _load_annotations(annotations)
    preds: dict[str, str] = {}
    unknown, duplicates = [], []
    for row in _load_answers(answers_jsonl):
        if "question_id" not in row:
            raise ValueError(f"Answer row has no 'question_id': {dict(row)!r}")
        qid = str(row["question_id"])
        if qid not in gold:
            unknown.append(qid)
        elif qid in preds:
            duplicates.append(qid)  # the first answer counts
        else:
            preds[qid] = str(row.get("text") or "")
    if unknown:
        source = answers_jsonl if isinstance(answers_jsonl, (str, Path)) else "answers"
        where = annotations if isinstance(annotations, (str, Path)) else "the annotations"
        raise ValueError(f"{source}: {len(unknown)} answer(s) have question ids not in {where}: "
                         f"{', '.join(map(repr, unknown[:10]))}{', ...' if len(unknown) > 10 else ''}")

    # Every answer a category has (not only those of the questions scored), so whether an answer
    # scores does not depend on the other questions in the file.
    vocab: dict[str, set[tuple[str, ...]]] = {
        category: {tuple(normalize_answer(v)) for v in values} for category, values in VOCAB.items()}
    for ann in gold.values():
        vocab.setdefault(ann["category"], set()).add(tuple(normalize_answer(ann["answer"])))

    per: dict[str, dict[str, Any]] = {}
    unanswered = 0
    for qid, ann in gold.items():
        cat = per.setdefault(ann["category"], {"correct": 0, "total": 0, "unanswered": 0})
        cat["total"] += 1
        pred = normalize_answer(preds.get(qid, ""))
        if not pred:
            unanswered += 1
            cat["unanswered"] += 1
            continue
        cat["correct"] += _is_correct(pred, normalize_answer(ann["answer"]), vocab[ann["category"]])
    for cat in per.values():
        cat["accuracy"] = cat["correct"] / cat["total"]
    correct = sum(c["correct"] for c in per.values())
    return {
        "overall": {"accuracy": correct / len(gold) if gold else 0.0, "correct": correct,
                    "total": len(gold)},
        "per_category": dict(sorted(per.items())),
        "unanswered": unanswered,
        "duplicates": len(duplicates),
        "duplicate_ids": duplicates,
    }


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m llava.data.synthetic", description=__doc__.split("\n")[0])
    defaults = SyntheticConfig()
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-stage1", type=int, default=defaults.num_stage1)
    parser.add_argument("--num-stage2", type=int, default=defaults.num_stage2)
    parser.add_argument("--num-eval", type=int, default=defaults.num_eval)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--text-only-fraction", type=float, default=defaults.text_only_fraction)
    parser.add_argument("--caption-turn-prob", type=float, default=defaults.caption_turn_prob,
                        help="chance that a stage-2 image sample also asks for a description")
    parser.add_argument("--noise-std", type=float, default=defaults.noise_std)
    parser.add_argument("--score", metavar="ANSWERS_JSONL",
                        help="score this answer file instead of generating")
    parser.add_argument("--annotations", help="annotations for --score (default OUT/eval/annotations.json)")
    args = parser.parse_args(argv)

    if args.score:
        ann = Path(args.annotations) if args.annotations else Path(args.out) / "eval" / "annotations.json"
        result = score_answers(args.score, ann)
        o = result["overall"]
        print(f"overall accuracy {o['accuracy']:.4f} ({o['correct']}/{o['total']}), "
              f"unanswered {result['unanswered']}")
        if result["duplicates"]:
            ids = result["duplicate_ids"]
            print(f"{len(ids)} repeated answer(s) left out, the first answer of each question scored (question_id "
                  f"{', '.join(map(repr, ids[:10]))}{', ...' if len(ids) > 10 else ''})")
        for name, c in result["per_category"].items():
            print(f"  {name:<9} {c['accuracy']:.4f} ({c['correct']}/{c['total']})")
        return result

    config = SyntheticConfig(num_stage1=args.num_stage1, num_stage2=args.num_stage2,
                             num_eval=args.num_eval, image_size=args.image_size, seed=args.seed,
                             text_only_fraction=args.text_only_fraction,
                             caption_turn_prob=args.caption_turn_prob, noise_std=args.noise_std)
    start = time.perf_counter()
    result = generate(args.out, config)
    seconds = time.perf_counter() - start
    c = result["counts"]
    print(f"wrote {c['images']} images ({config.image_size}px, seed {config.seed}) to "
          f"{result['image_folder']} in {seconds:.1f}s")
    print(f"  stage1 {c['stage1']} captions -> {result['stage1']}")
    print(f"  stage2 {c['stage2']} samples ({c['stage2_text_only']} text-only, "
          f"{c['stage2_turns']} turns) -> {result['stage2']}")
    print(f"  stage0 {c['stage0_images']} labelled images -> {result['stage0']}")
    print(f"  eval   {c['eval']} questions -> {result['eval_questions']}")
    return result


if __name__ == "__main__":
    main()
