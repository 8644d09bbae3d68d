"""The synthetic quickstart dataset: reproducible, well-formed, and its answers match its pixels."""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.data.synthetic import (
    ANSWER_PROMPT,
    FORMAT_VERSION,
    IGNORE_LABEL,
    KINDS,
    PALETTE,
    QUESTION_TYPES,
    VOCAB,
    SyntheticConfig,
    _background,
    caption,
    class_labels,
    generate,
    longest_samples,
    main,
    score_answers,
    stage0_batch,
)

CONFIG = SyntheticConfig(num_stage1=40, num_stage2=60, num_eval=25, image_size=112, seed=0)
DATA_FILES = ("stage0.json", "stage1.json", "stage2.json", "meta.json",
              "eval/questions.jsonl", "eval/annotations.json")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "a"
    generate(out, CONFIG)
    return out


def _load(out: Path, name: str):
    return json.loads((out / name).read_text())


def _questions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "eval/questions.jsonl").read_text().splitlines()]


def _pixels(out: Path) -> dict[str, np.ndarray]:
    root = out / "images"
    return {p.relative_to(root).as_posix(): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))}


def _components(mask: np.ndarray) -> int:
    """Number of 8-connected components of a boolean mask (a small BFS; no scipy needed)."""
    seen = np.zeros_like(mask)
    h, w = mask.shape
    n = 0
    for y, x in np.argwhere(mask):
        if seen[y, x]:
            continue
        n += 1
        seen[y, x] = True
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return n


# --- reproducibility --------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_pixels(dataset, tmp_path):
    generate(tmp_path, CONFIG)
    for name in DATA_FILES:
        assert (tmp_path / name).read_bytes() == (dataset / name).read_bytes(), name
    a, b = _pixels(dataset), _pixels(tmp_path)
    assert a.keys() == b.keys() and len(a) == 40 + 57 + 25
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_different_seed_differs(dataset, tmp_path):
    generate(tmp_path, SyntheticConfig(num_stage1=40, num_stage2=60, num_eval=25, seed=1))
    for name in ("stage1.json", "stage2.json", "eval/annotations.json"):
        assert (tmp_path / name).read_bytes() != (dataset / name).read_bytes(), name
    a, b = _pixels(dataset), _pixels(tmp_path)
    assert sum(not np.array_equal(a[k], b[k]) for k in a) == len(a)


def test_sample_does_not_depend_on_split_sizes(dataset, tmp_path):
    generate(tmp_path, SyntheticConfig(num_stage1=5, num_stage2=0, num_eval=3, seed=0))
    assert _load(tmp_path, "stage1.json") == _load(dataset, "stage1.json")[:5]
    assert _questions(tmp_path) == _questions(dataset)[:3]
    a, b = _pixels(dataset), _pixels(tmp_path)
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_smaller_run_in_the_same_folder_leaves_only_its_own_images(tmp_path):
    generate(tmp_path, SyntheticConfig(num_stage1=6, num_stage2=6, num_eval=4, seed=0))
    (tmp_path / "images" / "eval" / "notes.png").write_bytes(b"someone else's file")
    result = generate(tmp_path, SyntheticConfig(num_stage1=3, num_stage2=2, num_eval=2, seed=0))
    pngs = sorted(p.relative_to(tmp_path / "images").as_posix() for p in (tmp_path / "images").rglob("*.png"))
    assert len(pngs) == result["counts"]["images"] + 1 and "eval/notes.png" in pngs


def test_a_run_stopped_halfway_leaves_no_finished_looking_dataset(tmp_path):
    """meta.json vouches for a finished dataset (the quickstart's --reuse reads it): a run that
    fails after redrawing the images leaves none, not the earlier run's."""
    generate(tmp_path, SyntheticConfig(num_stage1=3, num_stage2=2, num_eval=2, seed=0))
    assert (tmp_path / "meta.json").is_file()
    (tmp_path / "stage1.json").unlink()
    (tmp_path / "stage1.json").mkdir()  # writing stage1.json fails after every image is drawn
    with pytest.raises(IsADirectoryError):
        generate(tmp_path, SyntheticConfig(num_stage1=3, num_stage2=2, num_eval=2, seed=1))
    assert not (tmp_path / "meta.json").exists()


# --- formats ----------------------------------------------------------------------------------


def test_training_files_have_llava_format(dataset):
    images = dataset / "images"
    stage1 = _load(dataset, "stage1.json")
    stage2 = _load(dataset, "stage2.json")
    assert len(stage1) == 40 and len(stage2) == 60
    for sample in stage1 + stage2:
        assert set(sample) <= {"id", "image", "conversations"}
        conv = sample["conversations"]
        assert len(conv) >= 2 and len(conv) % 2 == 0
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert all(t["value"].strip() for t in conv)
        n_tags = sum(t["value"].count("<image>") for t in conv)
        if "image" in sample:
            assert (images / sample["image"]).is_file(), sample["id"]
            assert n_tags == 1 and conv[0]["value"].startswith("<image>\n"), sample["id"]
        else:
            assert n_tags == 0, sample["id"]
    for sample in stage1:
        assert "image" in sample and len(sample["conversations"]) == 2
    text_only = [s for s in stage2 if "image" not in s]
    assert len(text_only) == round(60 * CONFIG.text_only_fraction) == 3
    ids = [s["id"] for s in stage1 + stage2]
    assert len(ids) == len(set(ids))


def test_eval_files_match_and_are_held_out(dataset):
    questions = _questions(dataset)
    annotations = _load(dataset, "eval/annotations.json")
    assert len(questions) == 25
    assert [q["question_id"] for q in questions] == list(annotations)
    for q in questions:
        assert set(q) == {"question_id", "image", "text", "category"}
        assert q["text"].endswith("\n" + ANSWER_PROMPT) and "<image>" not in q["text"]
        ann = annotations[q["question_id"]]
        assert ann["category"] == q["category"] and ann["image"] == q["image"]
        assert ann["answer"] in VOCAB[q["category"]]
        assert (dataset / "images" / q["image"]).is_file()
    counts = {c: sum(q["category"] == c for q in questions) for c in QUESTION_TYPES}
    assert counts == {c: 5 for c in QUESTION_TYPES}
    train = {s["image"] for f in ("stage1.json", "stage2.json") for s in _load(dataset, f) if "image" in s}
    eval_images = {q["image"] for q in questions}
    assert not train & eval_images
    assert not {s["image"] for s in _load(dataset, "stage0.json")["samples"]} & eval_images


def test_meta_and_stage0_labels(dataset):
    meta = _load(dataset, "meta.json")
    assert meta["seed"] == 0 and meta["image_size"] == 112
    assert class_labels(dataset / "meta.json") == class_labels(meta) == class_labels()
    assert meta["counts"]["images"] == 40 + 57 + 25
    for key, rel in meta["files"].items():
        assert (dataset / rel).is_file(), key
    stage0 = _load(dataset, "stage0.json")
    assert stage0["tasks"] == meta["vocab"] and stage0["ignore_index"] == IGNORE_LABEL
    train = {s["image"] for f in ("stage1.json", "stage2.json") for s in _load(dataset, f) if "image" in s}
    assert {s["image"] for s in stage0["samples"]} == train
    for s in stage0["samples"]:
        assert set(s["labels"]) == set(QUESTION_TYPES)
        for task, label in s["labels"].items():
            if task in KINDS[s["kind"]]:
                assert 0 <= label < len(meta["vocab"][task]), (s["id"], task)
            else:
                assert label == IGNORE_LABEL, (s["id"], task)


def test_training_answers_agree_with_labels(dataset):
    """Every short answer and caption in stage 1/2 is one of that image's stage-0 attributes."""
    vocab = class_labels()
    attrs = {s["image"]: {t: vocab[t][i] for t, i in s["labels"].items() if i != IGNORE_LABEL}
             for s in _load(dataset, "stage0.json")["samples"]}
    for sample in _load(dataset, "stage1.json"):
        text = sample["conversations"][1]["value"].lower()
        for task, value in attrs[sample["image"]].items():
            if task != "count":
                assert value in text, (sample["id"], task, value, text)
    for sample in _load(dataset, "stage2.json"):
        if "image" not in sample:
            continue
        for turn in sample["conversations"][1::2]:
            if " " not in turn["value"]:  # short answers; the rest are captions
                assert turn["value"] in attrs[sample["image"]].values(), (sample["id"], turn)


def test_text_only_answers_are_right(tmp_path):
    """The text-only questions (no image) of stage 2 are answered correctly: sides, sums, words, paint."""
    generate(tmp_path, SyntheticConfig(num_stage1=0, num_stage2=40, num_eval=0, image_size=32, text_only_fraction=1.0))
    mixes = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple"}
    seen = set()
    for sample in _load(tmp_path, "stage2.json"):
        conv = sample["conversations"]
        for q, a in zip(conv[::2], conv[1::2]):
            text = q["value"].removesuffix("\n" + ANSWER_PROMPT)
            if m := re.fullmatch(r"How many sides does a (triangle|square) have\?", text):
                expected, what = {"triangle": "3", "square": "4"}[m[1]], m[1]
            elif m := re.fullmatch(r"What is (\d+) plus (\d+)\?", text):
                expected, what = str(int(m[1]) + int(m[2])), "sum"
            elif m := re.fullmatch(r"Write the word ([A-Z]+) in lowercase letters\.", text):
                expected, what = m[1].lower(), "word"
            elif m := re.fullmatch(r"What color do you get by mixing (\w+) and (\w+) paint\?", text):
                expected, what = mixes[(m[1], m[2])], "paint"
            else:
                raise AssertionError(f"unexpected text-only question {text!r}")
            assert a["value"] == expected, (sample["id"], text, a["value"])
            seen.add(what)
    assert seen == {"triangle", "square", "sum", "word", "paint"}


def test_captions_name_every_attribute_with_the_right_article():
    assert caption({"kind": "object", "color": "orange", "shape": "star", "position": "left"}) == \
        "An orange star on the left."
    assert caption({"kind": "object", "color": "red", "shape": "circle", "position": "center"}) == \
        "A red circle in the center."
    assert caption({"kind": "count", "color": "blue", "shape": "cross", "count": "3"}) == "Three blue crosses."
    assert caption({"kind": "word", "color": "green", "word": "cat"}) == 'The word "CAT" written in green.'


def test_longest_samples_bound_every_generated_sample(tmp_path):
    """The quickstart sizes model_max_length from longest_samples: no sample the generator writes,
    a description turn included, may be longer (by any measure; characters and words here)."""
    out = tmp_path / "d"
    generate(out, SyntheticConfig(num_stage1=30, num_stage2=60, num_eval=0, image_size=32, caption_turn_prob=1.0))
    for measure in (len, lambda text: len(text.split())):
        longest = longest_samples(measure)
        for stage in ("stage1", "stage2"):
            bound = sum(measure(t["value"]) for t in longest[stage]["conversations"])
            sizes = [sum(measure(t["value"]) for t in s["conversations"]) for s in _load(out, f"{stage}.json")]
            assert max(sizes) <= bound, stage


# --- answers against pixels -------------------------------------------------------------------


def _samples_by_kind(dataset):
    vocab = class_labels()
    for s in _load(dataset, "stage0.json")["samples"]:
        labels = {t: vocab[t][i] for t, i in s["labels"].items() if i != IGNORE_LABEL}
        yield s["kind"], labels, s["boxes"], np.asarray(Image.open(dataset / "images" / s["image"]))


def test_object_colour_shape_and_position_match_pixels(dataset):
    seen = 0
    for kind, labels, boxes, pix in _samples_by_kind(dataset):
        if kind != "object":
            continue
        seen += 1
        (x0, y0, x1, y1), = boxes
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        colour = np.array(PALETTE[labels["color"]])
        assert (pix[cy, cx] == colour).all(), labels
        third = ["left", "center", "right"][min(2, cx * 3 // pix.shape[1])]
        assert third == labels["position"]
        box = (pix[y0:y1, x0:x1] == colour).all(-1)
        fill = box.mean()
        h, w = box.shape
        if labels["shape"] == "square":
            assert fill > 0.85
        elif labels["shape"] == "circle":
            assert 0.68 < fill < 0.85 and not box[1, 1]
        elif labels["shape"] == "star":
            assert fill < 0.45
        elif labels["shape"] == "triangle":  # apex at the top, base at the bottom
            assert box[-2, 1] and box[-2, -2] and not box[1, 1] and not box[1, -2]
        elif labels["shape"] == "cross":
            assert not box[1, 1] and not box[-2, -2] and box[h // 2, 1] and box[1, w // 2]
    assert seen >= 5


def test_count_images_have_that_many_separate_shapes(dataset):
    seen = 0
    for kind, labels, boxes, pix in _samples_by_kind(dataset):
        if kind != "count":
            continue
        seen += 1
        mask = (pix == np.array(PALETTE[labels["color"]])).all(-1)
        assert _components(mask) == int(labels["count"]) == len(boxes), labels
        others = [c for c in PALETTE if c != labels["color"]]
        assert not any((pix == np.array(PALETTE[c])).all(-1).any() for c in others)
    assert seen >= 5


def test_word_images_are_drawn_in_the_stated_colour_only(dataset):
    seen = 0
    for kind, labels, boxes, pix in _samples_by_kind(dataset):
        if kind != "word":
            continue
        seen += 1
        (x0, y0, x1, y1), = boxes
        mask = (pix == np.array(PALETTE[labels["color"]])).all(-1)
        assert mask.sum() > 0.03 * mask.size  # big letters
        ys, xs = np.nonzero(mask)
        assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
        assert _components(mask) >= 3  # three separate letters
        others = [c for c in PALETTE if c != labels["color"]]
        assert not any((pix == np.array(PALETTE[c])).all(-1).any() for c in others)
    assert seen >= 5


# --- scoring ----------------------------------------------------------------------------------

ANNOTATIONS = {
    "c": {"answer": "red", "category": "color"},
    "c2": {"answer": "blue", "category": "color"},
    "n": {"answer": "3", "category": "count"},
    "n2": {"answer": "2", "category": "count"},
    "p": {"answer": "center", "category": "position"},
    "w": {"answer": "cat", "category": "word"},
    "s": {"answer": "circle", "category": "shape"},
    "7": {"answer": "triangle", "category": "shape"},
}


@pytest.mark.parametrize("text, qid, correct", [
    ("Red.", "c", True),
    ("red", "c", True),
    ("The colour is red.", "c", True),
    ("red circle", "c", True),
    ("blue", "c", False),
    ("blue or red", "c", False),  # names two colours: not an answer
    ("red or blue", "c", False),  # even with the right one first
    ("Red, green, blue, yellow, orange or purple.", "c", False),
    ("It is green or red", "c", False),  # green is no question's answer here: the vocabulary still knows it
    ("left, center, or right", "p", False),
    ("Center, not left.", "p", False),
    ("three", "n", True),
    ("Three.", "n", True),
    ("There are 3 shapes.", "n", True),
    ("3", "n2", False),
    ("two", "n2", True),
    ("In the middle.", "p", True),
    ("centre", "p", True),
    ("CAT", "w", True),
    ("The word is \"CAT\".", "w", True),
    ("A circle", "s", True),
    ("circles", "s", False),
])
def test_score_answers_matching(text, qid, correct):
    result = score_answers([{"question_id": qid, "text": text}], ANNOTATIONS)
    assert result["overall"]["correct"] == int(correct)
    assert result["overall"]["total"] == len(ANNOTATIONS)


def test_score_answers_counts_missing_and_duplicates_and_refuses_unknown_ids(tmp_path):
    answers = tmp_path / "answers.jsonl"
    rows = [
        {"question_id": "c", "prompt": "...", "text": "Red", "answer_id": "x", "model_id": "m", "metadata": {}},
        {"question_id": "c", "text": "blue"},  # duplicate: the first answer counts
        {"question_id": 7, "text": "triangle"},  # int ids match string keys
        {"question_id": "n", "text": "  "},  # empty: unanswered
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(ANNOTATIONS))
    result = score_answers(answers, annotations)
    assert result["overall"] == {"accuracy": 2 / 8, "correct": 2, "total": 8}
    assert result["unanswered"] == 6 and result["duplicates"] == 1 and result["duplicate_ids"] == ["c"]
    assert result["per_category"]["color"] == {"correct": 1, "total": 2, "unanswered": 1, "accuracy": 0.5}
    assert result["per_category"]["count"]["unanswered"] == 2
    assert set(result["per_category"]) == {"color", "count", "position", "word", "shape"}
    other = tmp_path / "other.jsonl"  # another benchmark's answers: an error, not a score of 0
    other.write_text("".join(json.dumps({"question_id": q, "text": "yes"}) + "\n" for q in (101, "c", 102)))
    with pytest.raises(ValueError, match=r"other\.jsonl: 2 answer\(s\) have question ids not in "
                                         r".*annotations\.json: '101', '102'"):
        score_answers(other, annotations)


def test_score_generated_eval(dataset):
    annotations = _load(dataset, "eval/annotations.json")
    perfect = [{"question_id": q, "text": a["answer"].capitalize() + "."} for q, a in annotations.items()]
    result = score_answers(perfect, dataset / "eval/annotations.json")
    assert result["overall"]["accuracy"] == 1.0 and result["unanswered"] == 0
    assert all(c["accuracy"] == 1.0 for c in result["per_category"].values())
    result = score_answers([], annotations)
    assert result["overall"]["correct"] == 0 and result["unanswered"] == 25


# --- CLI and config ---------------------------------------------------------------------------


def test_cli_generates_and_scores(tmp_path, capsys):
    out = tmp_path / "cli"
    result = main(["--out", str(out), "--num-stage1", "4", "--num-stage2", "6", "--num-eval", "5",
                   "--image-size", "64", "--seed", "3"])
    printed = capsys.readouterr().out
    assert "stage1 4 captions" in printed and "eval   5 questions" in printed
    assert result["counts"]["stage1"] == 4 and result["counts"]["eval"] == 5
    assert Image.open(out / "images" / "eval" / "000000.png").size == (64, 64)
    assert _load(out, "meta.json")["image_size"] == 64
    answers = out / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q["question_id"], "text": "red"}) + "\n"
                               for q in _questions(out)))
    main(["--out", str(out), "--score", str(answers)])
    assert "overall accuracy" in capsys.readouterr().out
    first = _questions(out)[0]["question_id"]
    with answers.open("a") as f:
        f.write(json.dumps({"question_id": first, "text": "blue"}) + "\n")
    main(["--out", str(out), "--score", str(answers)])
    assert f"1 repeated answer(s) left out, the first answer of each question scored (question_id {first!r})" \
        in capsys.readouterr().out


# sha256 of the pixels of stage0_batch(0, 24, config) for (image_size, noise_std), as drawn by format
# version 1 of the generator. A change here means other images for the same seed: bump
# FORMAT_VERSION (so --reuse redraws old datasets) and record the new sums.
PIXEL_SUMS = {
    (112, 4.0): "9eb3e58279171181293abeac1370ad2f8c0b48bea93aa06eba935a854b998a98",
    (64, 4.0): "907acc8c56c34fc5b7373bfedff48be28bf27818d301de3119be5d0f1a862cbd",
    (112, 0.0): "37c7258137cdaee806a284abbc5ad6a7d01237de70ab7e496158c9db1dafc4a6",
}


@pytest.mark.parametrize("size_and_noise", list(PIXEL_SUMS))
def test_images_of_this_format_version_are_unchanged(size_and_noise):
    assert FORMAT_VERSION == 1
    size, noise = size_and_noise
    images, _ = stage0_batch(0, 24, SyntheticConfig(image_size=size, noise_std=noise))
    digest = hashlib.sha256(b"".join(np.asarray(im).tobytes() for im in images)).hexdigest()
    assert digest == PIXEL_SUMS[size_and_noise]


def test_background_matches_the_broadcast_formula():
    for seed in range(20):
        for w, noise in ((112, 4.0), (56, 0.0)):
            rng = np.random.default_rng(seed)
            tint = (rng.integers(215, 246) + rng.integers(-6, 7, size=3)).astype(np.float32)
            ramp = np.linspace(-0.5, 0.5, w, dtype=np.float32)
            gx, gy = rng.uniform(-16.0, 16.0, size=2)
            bg = tint + (gx * ramp[None, :] + gy * ramp[:, None])[..., None]
            if noise > 0:
                coarse = rng.normal(0.0, noise, size=(w // 8, w // 8)).astype(np.float32)
                bg = bg + np.asarray(Image.fromarray(coarse).resize((w, w), Image.BILINEAR))[..., None]
            expected = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
            got = _background(w, np.random.default_rng(seed), noise)
            assert got.shape == (w, w, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected)


def test_caption_turn_prob_adds_description_turns_to_the_same_chats(dataset, tmp_path):
    describe = "Describe the image briefly."

    def turns(sample: dict) -> list[tuple[str, str]]:  # (question without the image tag, answer)
        c = sample["conversations"]
        return [(q["value"].removeprefix("<image>\n"), r["value"]) for q, r in zip(c[::2], c[1::2])]

    def described(out: Path) -> list[bool]:
        return [any(q == describe for q, _ in turns(s)) for s in _load(out, "stage2.json") if "image" in s]

    always, never = tmp_path / "always", tmp_path / "never"
    generate(always, replace(CONFIG, caption_turn_prob=1.0))
    generate(never, replace(CONFIG, caption_turn_prob=0.0))
    assert all(described(always)) and not any(described(never))
    assert 0 < sum(described(dataset)) < len(described(dataset))  # the default, 0.15
    for a, b in zip(_load(always, "stage2.json"), _load(never, "stage2.json")):
        # the same image and questions, with one description turn added among them
        assert a.get("image") == b.get("image")
        if "image" not in a:
            continue
        assert [t for t in turns(a) if t[0] != describe] == turns(b)
        assert sum(q == describe for q, _ in turns(a)) == 1
        assert a["conversations"][0]["value"].startswith("<image>\n")
    pixels_always, pixels_never = _pixels(always), _pixels(never)
    assert pixels_always.keys() == pixels_never.keys()
    assert all(np.array_equal(pixels_always[k], pixels_never[k]) for k in pixels_always)
    assert (always / "eval/questions.jsonl").read_text() == (never / "eval/questions.jsonl").read_text()
    assert _load(always, "meta.json")["config"]["caption_turn_prob"] == 1.0


@pytest.mark.parametrize("kwargs", [{"num_stage1": -1}, {"image_size": 16}, {"text_only_fraction": 1.5},
                                    {"caption_turn_prob": -0.1}, {"kind_weights": (1.0, 0.0)}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)
