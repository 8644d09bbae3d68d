"""The data pipeline without a model: label masking, truncation, collation, sampling, the data check."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.data.collator import DataCollatorForSupervisedDataset
from llava.data.dataset import LazySupervisedDataset, SampleTooLongError, check_tokenization
from llava.data.preprocess import conv_mode_for_version, conversation_template, preprocess, preprocess_multimodal
from llava.data.sampler import (
    LengthGroupedSampler,
    get_length_grouped_indices,
    get_modality_length_grouped_indices,
    split_megabatch,
)
from llava.data.validation import check_data_file, enforce_report, load_records
from llava.mm_utils import tokenizer_image_token

TURNS = [
    {"from": "human", "value": "What is in the image?\n<image>"},
    {"from": "gpt", "value": "A cat is sitting on the grass."},
    {"from": "human", "value": "How many cats?"},
    {"from": "gpt", "value": "One."},
]


@pytest.fixture(scope="module")
def llama_tok(llama_tokenizer_dir):
    return AutoTokenizer.from_pretrained(llama_tokenizer_dir)


@pytest.fixture(scope="module")
def chatml_tok(chatml_tokenizer_dir):
    return AutoTokenizer.from_pretrained(chatml_tokenizer_dir)


def _prompt(conv, turns):
    conv = conv.copy()
    conv.messages = []
    for t in turns:
        conv.append_message(conv.roles[0] if t["from"] == "human" else conv.roles[1], t["value"])
    return conv.get_prompt()


def _target_text(tokenizer, result):
    return tokenizer.decode([t for t in result.labels if t != IGNORE_INDEX])


@pytest.mark.parametrize("version, tok_name, stop",
                         [("v1", "llama_tok", "</s>"), ("chatml", "chatml_tok", "<|im_end|>")])
def test_chat_templates_train_only_the_replies(version, tok_name, stop, request):
    tokenizer = request.getfixturevalue(tok_name)
    conv = conversation_template(version)
    turns = preprocess_multimodal(TURNS, mm_use_im_start_end=False, version=version)
    assert turns[0]["value"] == "<image>\nWhat is in the image?"  # the tag moves to the front
    result = preprocess(turns, tokenizer, conv)
    assert result.mismatch is None
    # ids are exactly what inference tokenizes for the same prompt
    assert result.input_ids == tokenizer_image_token(_prompt(conv, turns), tokenizer)
    assert result.input_ids.count(IMAGE_TOKEN_INDEX) == 1
    assert result.labels[result.input_ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
    target = _target_text(tokenizer, result).replace(" ", "")
    assert target == f"Acatissittingonthegrass.{stop}One.{stop}".replace(" ", "")
    # everything trained on is a reply token, in order
    trained = [(i, t) for i, (t, lab) in enumerate(zip(result.input_ids, result.labels)) if lab != IGNORE_INDEX]
    assert all(result.input_ids[i] == lab for i, lab in trained)


def test_mmtag_versions_wrap_the_image_tag_as_upstream():
    """Upstream's training rule for the *_mmtag templates: the moved tag becomes <Image><image></Image>."""
    turns = preprocess_multimodal(TURNS, mm_use_im_start_end=False, version="v1_mmtag")
    assert turns[0]["value"] == "<Image><image></Image>\nWhat is in the image?"
    assert preprocess_multimodal(TURNS, mm_use_im_start_end=False, version="v1")[0]["value"].startswith("<image>\n")


def test_plain_template_masks_everything_but_the_caption(llama_tok):
    conv = conversation_template("plain")
    turns = [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": "A red car."}]
    result = preprocess(preprocess_multimodal(turns, mm_use_im_start_end=False, version="plain"), llama_tok, conv)
    # upstream: "<image>" + caption + "\n", the instruction is dropped
    assert result.input_ids == tokenizer_image_token("<image>A red car.\n", llama_tok)
    assert result.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]  # BOS, image
    assert _target_text(llama_tok, result).strip() == "A red car."


def test_conv_mode_recorded_for_inference():
    assert conv_mode_for_version("v1") == "vicuna_v1"
    assert conv_mode_for_version("chatml") == "chatml"
    assert conv_mode_for_version("plain") is None
    with pytest.raises(ValueError, match="not supported for training"):
        conversation_template("llama_2")


@pytest.mark.parametrize("version", ["plian", "vicuna-v1"])
def test_unknown_version_is_an_error_listing_the_known_ones(version):
    """Upstream (and this project before) trained a typo with vicuna_v1 and recorded that template."""
    known = r"known: chatml, chatml_direct, default, .*, mpt, plain, v0, .*, v1, v1_mmtag, vicuna_v1$"
    with pytest.raises(ValueError, match=rf"^--version '{version}' names no conversation template; {known}"):
        conversation_template(version)
    with pytest.raises(ValueError, match=rf"^--version '{version}' names no conversation template"):
        conv_mode_for_version(version)


@pytest.mark.parametrize("version, template", [("v1", "vicuna_v1"), ("llava_v1", "llava_v1"), ("plain", "plain"),
                                               ("v0_plain", "plain"), ("mpt", "mpt"), ("v0", "v0")])
def test_upstream_version_names_pick_their_templates(version, template):
    assert conversation_template(version) is conv_templates[template]


def _mismatching_dataset(tokenizer_dir) -> LazySupervisedDataset:
    """Four text samples s0..s3; s1 and s3 cannot be labelled: a token spans "ASSISTANT:" and the reply."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(["T: A"])
    samples = [{"id": f"s{i}", "conversations": [{"from": "human", "value": "Hi"},
                                                  {"from": "gpt", "value": ("A cat." if i % 2 else "The cat.")}]}
               for i in range(4)]
    return LazySupervisedDataset(samples, tokenizer, conv_templates["vicuna_v1"], num_image_tokens=0,
                                 model_max_length=128)


def test_tokenization_mismatch_is_reported_not_hidden(llama_tokenizer_dir):
    """A token spanning "ASSISTANT:" and the reply cannot be labelled: the sample is flagged."""
    dataset = _mismatching_dataset(llama_tokenizer_dir)
    check = check_tokenization(dataset)
    assert check.checked == 4 and [sid for sid, _ in check.mismatched] == ["s1", "s3"]
    assert "'s1'" in check.mismatch_message() and "spans prompt text" in check.mismatch_message()
    item = dataset[1]
    assert item["tokenization_mismatch"] and (item["labels"] == IGNORE_INDEX).all()
    assert not dataset[0]["tokenization_mismatch"]


def _image_sample(sid, question_words=3, answer_words=2):
    return {"id": sid, "image": "x.png", "conversations": [
        {"from": "human", "value": "<image>\n" + " ".join(["cat"] * question_words)},
        {"from": "gpt", "value": " ".join(["dog"] * answer_words)}]}


def test_truncation_keeps_the_image_and_cuts_the_text_end(llama_tok):
    conv = conv_templates["vicuna_v1"]
    sample = _image_sample("long", question_words=3, answer_words=40)
    full = preprocess(preprocess_multimodal(sample["conversations"], mm_use_im_start_end=False), llama_tok, conv)
    visual = 16
    max_len = len(full.input_ids) + visual - 1 - 10  # 10 tokens too long with its visual tokens
    dataset = LazySupervisedDataset([sample], llama_tok, conv, num_image_tokens=visual, model_max_length=max_len,
                                    image_processor=object())
    tokens = dataset.tokenize(0)
    assert len(tokens.input_ids) + visual - 1 == max_len
    assert IMAGE_TOKEN_INDEX in tokens.input_ids
    assert tokens.input_ids == full.input_ids[:len(tokens.input_ids)]
    assert any(lab != IGNORE_INDEX for lab in tokens.labels)


def test_a_sample_that_cannot_fit_names_itself(llama_tok):
    conv = conv_templates["vicuna_v1"]
    dataset = LazySupervisedDataset([_image_sample("huge-prompt", question_words=5)], llama_tok, conv,
                                    num_image_tokens=64, model_max_length=64, image_processor=object(), indices=[7])
    with pytest.raises(SampleTooLongError, match=r"sample 'huge-prompt' \(index 7\).*model_max_length=64"):
        dataset.tokenize(0)
    # the image fits, but nothing of the answer would
    sample = _image_sample("no-answer", question_words=40)
    full = preprocess(preprocess_multimodal(sample["conversations"], mm_use_im_start_end=False), llama_tok, conv)
    room = full.input_ids.index(IMAGE_TOKEN_INDEX) + 8 + 5  # the image and 5 question tokens fit
    dataset = LazySupervisedDataset([sample], llama_tok, conv, num_image_tokens=8, model_max_length=room,
                                    image_processor=object())
    with pytest.raises(SampleTooLongError, match="'no-answer'.*no answer token"):
        dataset.tokenize(0)
    check = check_tokenization(dataset)
    assert [b.sample_id for b in check.too_long] == ["no-answer"] and check.too_long[0].reason == "too_long"


def test_a_prompt_that_ends_one_token_past_room_for_its_image_says_so(llama_tok):
    """The boundary case: the text up to the image plus its visual tokens is one token too long. The
    error is about the image not fitting (cutting the text there would cut the image token off)."""
    conv = conv_templates["vicuna_v1"]
    sample = _image_sample("edge", question_words=5)
    full = preprocess(preprocess_multimodal(sample["conversations"], mm_use_im_start_end=False), llama_tok, conv)
    position, visual = full.input_ids.index(IMAGE_TOKEN_INDEX), 8
    dataset = LazySupervisedDataset([sample], llama_tok, conv, num_image_tokens=visual,
                                    model_max_length=position + visual - 1, image_processor=object())
    with pytest.raises(SampleTooLongError, match=rf"'edge'.*its text up to the image is {position + 1} tokens and "
                                                 rf"the image adds {visual} visual tokens"):
        dataset.tokenize(0)


def test_the_length_bound_counts_visual_tokens(llama_tok):
    """A sample with little text and many visual tokens is not cleared by the byte bound: the full
    length check tokenizes it and finds it too long before training."""
    conv = conv_templates["vicuna_v1"]
    dataset = LazySupervisedDataset([_image_sample("first"), _image_sample("many-visual")], llama_tok, conv,
                                    num_image_tokens=300, model_max_length=320, image_processor=object())
    text_only = LazySupervisedDataset([_image_sample("first"), _image_sample("many-visual")], llama_tok, conv,
                                      num_image_tokens=0, model_max_length=320, image_processor=object())
    assert text_only.surely_fits(1) and not dataset.surely_fits(1)
    check = check_tokenization(dataset, max_samples=0, check_all_lengths=True)
    assert [b.sample_id for b in check.too_long] == ["first", "many-visual"] and check.length_checked == 2


def test_only_the_checked_samples_count_as_mismatched(llama_tokenizer_dir):
    """Mismatches are a share of the samples tokenized for the check (``checked``): a later sample
    tokenized only for its length does not add to them (the run's mismatch ratio would pass 100%)."""
    dataset = _mismatching_dataset(llama_tokenizer_dir)
    assert not any(dataset.surely_fits(i) for i in range(4))  # so every length is checked by tokenizing
    check = check_tokenization(dataset, max_samples=2, check_all_lengths=True)
    assert (check.checked, check.length_checked) == (2, 4)
    assert [sid for sid, _ in check.mismatched] == ["s1"]
    assert check.mismatch_message().startswith("tokenization mismatch in 1 of 2 checked samples")


def test_null_image_is_a_text_only_sample(llama_tok):
    sample = {**_image_sample("null"), "image": None}
    sample["conversations"][0]["value"] = sample["conversations"][0]["value"].replace("<image>\n", "")
    dataset = LazySupervisedDataset([sample], llama_tok, conv_templates["vicuna_v1"], num_image_tokens=16,
                                    model_max_length=512, image_processor=object())
    item = dataset[0]
    assert "image" not in item and IMAGE_TOKEN_INDEX not in item["input_ids"].tolist()
    assert dataset.modality_lengths[0] < 0 and dataset.lengths[0] == dataset._word_count(sample)


def test_cut_answers_are_counted_and_the_length_bound_holds(llama_tok, caplog):
    """Samples cut to fit keep some answers: the check counts the answer tokens lost. The byte
    bound that lets the full length check skip tokenizing never clears a sample that does not fit."""
    conv = conv_templates["vicuna_v1"]
    samples = [_image_sample(f"s{n}", question_words=3, answer_words=n) for n in (2, 10, 300, 600)]
    dataset = LazySupervisedDataset(samples, llama_tok, conv, num_image_tokens=16, model_max_length=320,
                                    image_processor=object())
    full = [preprocess(preprocess_multimodal(s["conversations"], mm_use_im_start_end=False), llama_tok, conv)
            for s in samples]
    needed = [len(f.input_ids) + 15 for f in full]
    assert needed[1] <= 320 < needed[2]
    for i, n in enumerate(needed):
        assert not dataset.surely_fits(i) or n <= 320
    assert dataset.surely_fits(0) and not dataset.surely_fits(3)

    check = check_tokenization(dataset, max_samples=1, check_all_lengths=True)
    assert check.checked == 1 and check.length_checked == 4
    answers = [sum(label != IGNORE_INDEX for label in f.labels) for f in full]
    kept = [sum(label != IGNORE_INDEX for label in dataset.tokenize(i).labels) for i in (2, 3)]
    assert check.truncated == [("s300", answers[2] - kept[0], answers[2]), ("s600", answers[3] - kept[1], answers[3])]
    assert check.truncation_message().startswith("2 of 4 length-checked samples are cut to fit model_max_length")
    assert check_tokenization(dataset, max_samples=1).length_checked == 1  # without: only the first
    text_only = {"id": "long-text", "conversations": [{"from": "human", "value": "cat"},
                                                      {"from": "gpt", "value": " ".join(["dog"] * 80)}]}
    dataset = LazySupervisedDataset([text_only], llama_tok, conv, num_image_tokens=16, model_max_length=200,
                                    image_processor=object(), indices=[5])
    with caplog.at_level("WARNING", logger="llava.data.dataset"):
        assert len(dataset[0]["input_ids"]) == 200
    assert "sample 'long-text' (index 5) is cut to fit model_max_length=200" in caplog.text


def test_collator_pads_and_gives_text_only_samples_a_placeholder(llama_tok):
    llama_tok.pad_token = llama_tok.unk_token
    collate = DataCollatorForSupervisedDataset(llama_tok, image_shape=(3, 8, 8))
    image = torch.ones(3, 8, 8)
    batch = collate([
        {"input_ids": torch.tensor([1, IMAGE_TOKEN_INDEX, 5, 6]), "labels": torch.tensor([-100, -100, 5, 6]),
         "image": image, "id": "a", "tokenization_mismatch": False},
        {"input_ids": torch.tensor([1, 7]), "labels": torch.tensor([-100, 7]), "id": "b",
         "tokenization_mismatch": True},
    ])
    pad = llama_tok.pad_token_id
    assert batch["input_ids"].tolist() == [[1, IMAGE_TOKEN_INDEX, 5, 6], [1, 7, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"][1].tolist() == [-100, 7, -100, -100]
    assert batch["images"].shape == (2, 3, 8, 8)
    assert batch["images"][0].equal(image) and not batch["images"][1].any()  # zero placeholder
    assert batch["sample_ids"] == ["a", "b"] and batch["tokenization_mismatch"].tolist() == [False, True]


def test_modality_sampler_keeps_modalities_apart_and_is_reproducible():
    lengths = [10, -5, 20, 30, -7, 40, 15, -9, 25, 35, 12, -3, 50, -4]
    order = get_modality_length_grouped_indices(lengths, batch_size=2, world_size=2,
                                                generator=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(lengths)))
    megabatches = [order[i:i + 4] for i in range(0, len(order), 4)]
    mixed = [mb for mb in megabatches if len({lengths[i] > 0 for i in mb}) > 1]
    assert len(mixed) <= 1 and (not mixed or mixed[0] == megabatches[-1])  # only the leftover mixes
    sampler = LengthGroupedSampler(2, 2, lengths, group_by_modality=True, seed=3)
    first = list(sampler)
    assert list(LengthGroupedSampler(2, 2, lengths, group_by_modality=True, seed=3)) == first
    sampler.set_epoch(1)
    assert sorted(list(sampler)) == sorted(first)


def test_each_epoch_draws_a_new_order():
    lengths = [10, -5, 20, 30, -7, 40, 15, -9, 25, 35, 12, -3, 50, -4, 8, -6]
    for group_by_modality in (True, False):
        sampler = LengthGroupedSampler(2, 2, lengths, group_by_modality=group_by_modality, seed=3)
        orders = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
        assert all(sorted(order) == list(range(len(lengths))) for order in orders)
        assert len({tuple(order) for order in orders}) == 3, group_by_modality
        sampler.set_epoch(1)
        assert list(sampler) == orders[1]  # the same again after a resume


def test_image_and_text_megabatches_are_shuffled_together():
    """Upstream shuffles the megabatches of both modalities into one order: an epoch does not see
    every image step first and every text step after."""
    lengths = [10 + i for i in range(32)] + [-(10 + i) for i in range(32)]
    order = get_modality_length_grouped_indices(lengths, batch_size=2, world_size=2,
                                                generator=torch.Generator().manual_seed(0))
    image_steps = [lengths[order[i]] > 0 for i in range(0, len(order), 4)]
    # 7 full megabatches of each modality, then the two leftovers (4 + 4 samples) as the last one
    assert sum(image_steps[:14]) == 7 and image_steps[:14] != sorted(image_steps[:14], reverse=True)


def test_a_zero_modality_length_is_refused():
    """The sign carries the modality: a length of 0 would belong to neither and drop out of the epoch."""
    with pytest.raises(ValueError, match="modality lengths must be non-zero"):
        get_modality_length_grouped_indices([5, 0, -3, 4], batch_size=1, world_size=1)


def test_a_short_last_megabatch_fills_the_accumulation_steps():
    """10 samples where a megabatch holds 16 (4 per step): still 4 accumulation steps, of 3, 3, 3 and 1
    samples in length order, not a fifth step."""
    lengths = list(range(100, 90, -1))
    chunks = split_megabatch(list(range(10)), lengths, world_size=4, accumulation_steps=4)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    two_processes = split_megabatch(list(range(10)), lengths, world_size=4, accumulation_steps=2)
    assert len(two_processes) == 4 and sorted(i for c in two_processes for i in c) == list(range(10))


def _padded_tokens(order: list[int], lengths: list[int], batch_size: int) -> int:
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_accumulation_steps_take_contiguous_length_runs_of_the_same_megabatches():
    lengths = torch.randint(5, 200, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    whole = get_length_grouped_indices(lengths, 16, 1, torch.Generator().manual_seed(0))
    # 4 micro-batches of 4 per optimizer step, one process
    micro = get_length_grouped_indices(lengths, 4, 4, torch.Generator().manual_seed(0), accumulation_steps=4)
    upstream = get_length_grouped_indices(lengths, 4, 4, torch.Generator().manual_seed(0))  # chunks balanced
    for step in range(4):  # every optimizer step trains on the same 16 samples
        block = slice(16 * step, 16 * (step + 1))
        assert sorted(micro[block]) == sorted(whole[block]) == sorted(upstream[block])
        batches = [micro[16 * step + 4 * k:16 * step + 4 * (k + 1)] for k in range(4)]
        for longer, shorter in zip(batches, batches[1:]):  # longest first, no overlap of ranges
            assert min(lengths[i] for i in longer) >= max(lengths[i] for i in shorter)
    assert _padded_tokens(micro, lengths, 4) < 0.8 * _padded_tokens(upstream, lengths, 4)
    # 2 processes x 2 accumulation steps: each step's two rank batches are balanced, step 0 the longer
    both = get_length_grouped_indices(lengths, 4, 4, torch.Generator().manual_seed(0), accumulation_steps=2)
    assert sorted(both[:16]) == sorted(whole[:16])
    rank0, rank1, later0, later1 = (both[4 * k:4 * (k + 1)] for k in range(4))
    assert min(lengths[i] for i in rank0 + rank1) >= max(lengths[i] for i in later0 + later1)
    assert abs(sum(lengths[i] for i in rank0) - sum(lengths[i] for i in rank1)) <= max(lengths)
    # the modality sampler passes it on; a world size that is not a multiple is refused
    sampler = LengthGroupedSampler(4, 4, lengths, group_by_modality=True, seed=0, accumulation_steps=4)
    assert sorted(sampler) == list(range(64))
    with pytest.raises(ValueError, match="not a multiple of accumulation_steps"):
        LengthGroupedSampler(4, 6, lengths, accumulation_steps=4)


# ---------------------------------------------------------------------------------------- bad input


def _good(sid, image=None):
    sample = {"id": sid, "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + "Q?"},
                                            {"from": "gpt", "value": "A."}]}
    if image:
        sample["image"] = image
    return sample


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (20, 10), "red").save(folder / "ok.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def test_every_bad_sample_is_listed_with_its_id(tmp_path, image_folder):
    samples = [
        _good("fine", "ok.png"),
        {"id": "no-conv", "image": "ok.png"},
        {"id": "tag-no-image", "conversations": [{"from": "human", "value": "<image>\nQ?"},
                                                 {"from": "gpt", "value": "A."}]},
        {"id": "image-no-tag", "image": "ok.png", "conversations": [{"from": "human", "value": "Q?"},
                                                                    {"from": "gpt", "value": "A."}]},
        _good("missing-file", "nowhere.png"),
        _good("broken-file", "broken.png"),
        {"id": "bad-roles", "conversations": [{"from": "human", "value": "Q?"}, {"from": "human", "value": "Q?"}]},
        {"id": "empty-reply", "image": "ok.png", "conversations": [{"from": "human", "value": "<image>\nQ?"},
                                                                   {"from": "gpt", "value": ""}]},
        _good("text-only"),
        {**_good("image-null"), "image": None},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(samples))
    good, report = check_data_file(path, str(image_folder))
    assert [s["id"] for _, s in good] == ["fine", "text-only", "image-null"]
    reasons = {b.sample_id: b.reason for b in report.bad}
    assert reasons == {"no-conv": "no_conversations", "tag-no-image": "image_tag_without_image",
                       "image-no-tag": "image_without_image_tag", "missing-file": "missing_image",
                       "broken-file": "unreadable_image", "bad-roles": "bad_conversations",
                       "empty-reply": "empty_turn"}
    with pytest.raises(ValueError) as err:
        enforce_report(report, skip_bad_samples=False)
    message = str(err.value)
    assert "7 of 10 samples" in message and "--skip_bad_samples" in message
    assert "turn 1 (gpt) has an empty 'value'" in message
    for sid in reasons:
        assert f"sample {sid!r}" in message
    assert str(image_folder / "nowhere.png") in message and str(image_folder / "broken.png") in message
    assert "(index 4)" in message


@pytest.mark.parametrize("sample, reason", [
    ({"conversations": []}, "no_conversations"),
    ({"conversations": [{"from": "human", "value": "Q?"}]}, "bad_conversations"),  # nothing to train on
    ({"image": "ok.png", "conversations": [{"from": "human", "value": "<image>\nQ? <image>"},
                                           {"from": "gpt", "value": "A."}]}, "bad_image_tags"),
    ({"image": "ok.png", "conversations": [{"from": "human", "value": "Q?"},
                                           {"from": "gpt", "value": "A <image>."}]}, "bad_image_tags"),
    ({"image": ["ok.png"], "conversations": [{"from": "human", "value": "<image>\nQ?"},
                                             {"from": "gpt", "value": "A."}]}, "bad_image_tags"),
], ids=["empty-conversations", "no-gpt-turn", "two-tags", "tag-in-reply", "image-list"])
def test_samples_the_model_cannot_train_on_are_bad(tmp_path, image_folder, sample, reason):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_good("fine", "ok.png"), {"id": "bad", **sample}]))
    good, report = check_data_file(path, str(image_folder))
    assert [s["id"] for _, s in good] == ["fine"]
    assert [(b.sample_id, b.index, b.reason) for b in report.bad] == [("bad", 1, reason)]


def test_bad_samples_are_listed_in_file_order_and_a_long_list_is_cut(tmp_path, image_folder):
    samples = [_good("gone", "nowhere.png"), {"id": "no-conv"}, _good("fine", "ok.png"), _good("gone-too", "x.png")]
    samples += [{"id": f"n{i}"} for i in range(100)]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(samples))
    _, report = check_data_file(path, str(image_folder))
    assert [b.sample_id for b in report.bad[:3]] == ["gone", "no-conv", "gone-too"]
    with pytest.raises(ValueError) as err:
        enforce_report(report, skip_bad_samples=False, report_file="out/data_check_report.json")
    listed = [line for line in str(err.value).splitlines() if line.startswith("  - ")]
    assert len(listed) == 100 and listed[-1].startswith("  - sample 'n96' (index 100)")
    assert "  ... and 3 more (all listed in out/data_check_report.json)" in str(err.value)


def test_an_image_cut_short_is_found_before_training(tmp_path, image_folder):
    """A JPEG cut short (a partial download) has sound headers; it is found by decoding it, as
    training will, not hours into the run."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(image_folder / "whole.jpg", quality=90)
    data = (image_folder / "whole.jpg").read_bytes()
    (image_folder / "cut.jpg").write_bytes(data[:len(data) // 2])
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_good("whole", "whole.jpg"), _good("cut", "cut.jpg")]))
    good, report = check_data_file(path, str(image_folder))
    assert [s["id"] for _, s in good] == ["whole"]
    [bad] = report.bad
    assert (bad.sample_id, bad.reason) == ("cut", "unreadable_image")
    assert str(image_folder / "cut.jpg") in bad.detail and "truncated" in bad.detail
    good, report = check_data_file(path, str(image_folder), check_images=False)  # only that it exists
    assert len(good) == 2 and not report.bad


def test_skip_bad_samples_reports_counts_per_reason(tmp_path, image_folder, caplog):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_good("a", "ok.png"), _good("b", "gone1.png"), _good("c", "gone2.png"),
                                {"id": "d"}]))
    good, report = check_data_file(path, str(image_folder))
    with caplog.at_level(logging.WARNING):
        enforce_report(report, skip_bad_samples=True)
    assert len(good) == 1
    assert "Skipping 3 of 4 samples" in caplog.text
    assert "2 x missing_image" in caplog.text and "1 x no_conversations" in caplog.text


def test_unreadable_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n{"id": "a", "conversations": []},\n{"id": "b" "conversations": []}\n]')
    with pytest.raises(ValueError, match=r"data\.json: invalid JSON at line 3, column 12"):
        check_data_file(path, None)
    path.write_text('{"id": "a"}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        check_data_file(tmp_path / "data.json", None)


def test_jsonl_bad_line_is_a_bad_sample_with_its_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_good("a")) + "\n\n" + '{"id": "b", oops}\n' + json.dumps(_good("c")) + "\n")
    good, report = check_data_file(path, None)
    assert [s["id"] for _, s in good] == ["a", "c"]
    (bad,) = report.bad
    assert bad.reason == "invalid_json" and bad.line == 3 and "line 3, column" in bad.describe()


def test_jsonl_indices_count_a_bad_line(tmp_path):
    """A sample's index is its place in the file: an invalid line before it still counts."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(_good("a")) + "\n" + "{oops\n" + json.dumps(_good("c")) + "\n")
    good, report = check_data_file(path, None)
    assert [(i, s["id"]) for i, s in good] == [(0, "a"), (2, "c")]
    assert [(b.index, b.line) for b in report.bad] == [(1, 2)]


@pytest.mark.parametrize("name", ["data.jsonl", "data.json", "data"])
def test_a_byte_order_mark_is_skipped(tmp_path, name):
    """Windows editors and PowerShell write one: before, a JSONL file's first sample was reported as
    invalid JSON (and dropped with --skip_bad_samples), a JSON list failed to parse, and a list in a
    file without extension was read as JSONL."""
    samples = [_good("a"), _good("b")]
    jsonl = name.endswith(".jsonl")
    text = "".join(json.dumps(s) + "\n" for s in samples) if jsonl else json.dumps(samples, indent=1)
    path = tmp_path / name
    path.write_text("\ufeff" + text, encoding="utf-8")
    good, report = check_data_file(path, None)
    assert [s["id"] for _, s in good] == ["a", "b"] and not report.bad and report.num_samples == 2
    if jsonl:
        assert [line for _, line, _ in load_records(path)[0]] == [1, 2]  # lines as an editor counts them
    path.write_bytes(b"\xef\xbb\xbf[\xff]")
    with pytest.raises(ValueError, match=r"Cannot read .*: not UTF-8 text at byte 4"):
        check_data_file(path, None)


@pytest.mark.parametrize("indent", [1, None])
def test_a_json_list_saved_as_jsonl_is_named(tmp_path, indent):
    """Before: read by lines, a pretty-printed list of 2 samples was 28 bad samples."""
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps([_good("a"), _good("b")], indent=indent) + "\n")
    with pytest.raises(ValueError, match=r"data\.jsonl: this \.jsonl file holds a JSON list \(2 samples\), not one "
                                         r"sample per line; rename it to \.json"):
        check_data_file(path, None)
    path.write_text("[1, 2]\n[3]\n")  # lines that are lists, not one list: bad samples, as before
    _, report = check_data_file(path, None)
    assert [(b.line, b.reason) for b in report.bad] == [(1, "not_an_object"), (2, "not_an_object")]


@pytest.mark.parametrize("check_images", [True, False])
def test_an_image_path_that_is_a_directory_says_so(tmp_path, image_folder, check_images):
    (image_folder / "album").mkdir()
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_good("folder", "album"), _good("fine", "ok.png")]))
    good, report = check_data_file(path, str(image_folder), check_images=check_images)
    assert [s["id"] for _, s in good] == ["fine"]
    [bad] = report.bad
    assert bad.reason == "missing_image"
    assert bad.describe() == f"sample 'folder' (index 0): image path is a directory, not a file: {image_folder / 'album'}"


def test_plain_template_needs_image_and_caption(tmp_path, image_folder):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_good("cap", "ok.png"), _good("txt")]))
    _, report = check_data_file(path, str(image_folder), plain=True)
    assert [(b.sample_id, b.reason) for b in report.bad] == [("txt", "plain_needs_caption")]


def test_plain_template_needs_exactly_one_caption_turn(tmp_path, image_folder):
    """preprocess_plain trains on the first reply only: a multi-turn chat is refused, not cut short."""
    chat = _good("chat", "ok.png")
    chat["conversations"] += [{"from": "human", "value": "More?"}, {"from": "gpt", "value": "No."}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_good("cap", "ok.png"), chat]))
    _, report = check_data_file(path, str(image_folder), plain=True)
    assert [(b.sample_id, b.reason) for b in report.bad] == [("chat", "plain_needs_caption")]
    assert "got 4 turns" in report.bad[0].detail


def test_unreadable_image_at_load_time_names_sample_and_path(tmp_path, image_folder, llama_tok):
    from llava.model.multimodal_encoder.clip_encoder import build_image_processor
    from transformers import CLIPVisionConfig

    processor = build_image_processor(str(tmp_path), CLIPVisionConfig(image_size=28, patch_size=14))
    dataset = LazySupervisedDataset([_good("late-break", "broken.png")], llama_tok, conv_templates["vicuna_v1"],
                                    num_image_tokens=4, model_max_length=512, image_folder=str(image_folder),
                                    image_processor=processor)
    with pytest.raises(ValueError, match=r"sample 'late-break'.*broken\.png"):
        dataset[0]
    dataset.samples[0]["image"] = "ok.png"
    item = dataset[0]
    assert item["image"].shape == (3, 28, 28) and dataset.image_shape == (3, 28, 28)
