"""The LLaVA model: splicing rules, generation, and parity with transformers' Llava."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import tokenizer_image_token
from llava.model import weights
from llava.model.language_model.llava_llama import CACHE_ARG
from tests.conftest import tiny_llava_config, tiny_llava_model

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"


@pytest.fixture()
def model(tower_dir, llama_tokenizer):
    return tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer))


def test_encode_images_shape(model):
    images = torch.randn(3, 3, 56, 56)
    out = model.encode_images(images)
    assert out.shape == (3, 16, 64)
    assert model.num_image_tokens() == 16


@pytest.mark.parametrize("projector,patch_tokens", [("linear", 16), ("mlp2x_gelu", 16), ("avgpool", 4), ("delta", 4)])
@pytest.mark.parametrize("select_feature", ["patch", "cls_patch"])
def test_num_image_tokens_is_what_encode_images_makes(tower_dir, llama_tokenizer, projector, patch_tokens,
                                                      select_feature):
    """With cls_patch the per-token projectors make one more token (the CLS); pooling ones drop it.
    The count is what the dataset budgets sequence lengths with, so it must be exact."""
    config = tiny_llava_config(tower_dir, llama_tokenizer, projector=projector, mm_vision_select_feature=select_feature,
                               mm_delta_depth=0)  # this tower is 32 wide, too narrow for delta's block
    model = tiny_llava_model(config)
    tokens = model.encode_images(torch.randn(2, 3, 56, 56)).shape[1]
    assert tokens == model.num_image_tokens() == patch_tokens + (select_feature == "cls_patch" and projector in
                                                                ("linear", "mlp2x_gelu"))


def test_matches_transformers_llava(tower_dir, llama_tokenizer):
    """Same weights, same prompt with an image: identical logits (fp32)."""
    model = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer))
    image_token = len(llama_tokenizer) - 1
    hf = LlavaForConditionalGeneration(weights.to_hf_llava_config(model.config, image_token_index=image_token)).eval()
    missing, unexpected = hf.load_state_dict(weights.to_hf_llava_state_dict(model.state_dict()), strict=False)
    assert not unexpected and not [k for k in missing if "lm_head" not in k]

    ids = tokenizer_image_token(PROMPT, llama_tokenizer, return_tensors="pt").unsqueeze(0)
    cut = (ids[0] == IMAGE_TOKEN_INDEX).nonzero().item()
    hf_ids = torch.cat([ids[0, :cut], torch.full((16,), image_token), ids[0, cut + 1:]]).unsqueeze(0)
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ours = model(input_ids=ids, images=pixels).logits
        theirs = hf(input_ids=hf_ids, pixel_values=pixels).logits
    assert ours.shape == theirs.shape == (1, ids.shape[1] - 1 + 16, len(llama_tokenizer))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_labels_masked_over_image_and_padding_removed(model):
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, 8, 0], [1, IMAGE_TOKEN_INDEX, 9, 10, 11, 12]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = ids.clone().masked_fill(ids < 0, IGNORE_INDEX)
    _, pos, attn, _, embeds, new_labels = model.prepare_inputs_labels_for_multimodal(
        ids, None, mask, None, labels, torch.randn(2, 3, 56, 56))
    assert embeds.shape == (2, 5 + 16, 64)
    assert attn.tolist()[0] == [1] * 20 + [0]  # right padding by default
    assert new_labels[0, 2:18].eq(IGNORE_INDEX).all() and new_labels[0, 18:20].tolist() == [7, 8]
    assert new_labels[1, 1:17].eq(IGNORE_INDEX).all() and new_labels[1, 17:].tolist() == [9, 10, 11, 12]
    assert pos is None


def test_text_only_sample_with_placeholder_image_touches_projector(model):
    """A training batch gives text-only samples a placeholder image; the projector still gets grads."""
    model.train()
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 7, 8], [1, 5, 6, 7]])
    out = model(input_ids=ids, images=torch.randn(2, 3, 56, 56), labels=ids.clamp(min=0))
    out.loss.backward()
    assert all(p.grad is not None for p in model.get_model().mm_projector.parameters())
    # all-text batch with one placeholder image: still runs the projector (ZeRO-3 needs it)
    model.zero_grad()
    ids = torch.tensor([[1, 5, 6, 7]])
    model(input_ids=ids, images=torch.randn(1, 3, 56, 56), labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.get_model().mm_projector.parameters())


def test_feature_count_mismatch_names_counts(model):
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, 7]])
    with pytest.raises(ValueError, match="tokens 2, images 3"):
        model(input_ids=ids, images=torch.randn(3, 3, 56, 56))


def test_truncation_never_cuts_an_image(model):
    model.config.tokenizer_model_max_length = 10
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7]])
    with pytest.raises(ValueError, match="cut through an image"):
        model(input_ids=ids, images=torch.randn(1, 3, 56, 56))
    model.config.tokenizer_model_max_length = 19  # 2 text + 16 image + 1 text = 19: fits exactly
    assert model(input_ids=ids, images=torch.randn(1, 3, 56, 56)).logits.shape[1] == 19
    model.config.tokenizer_model_max_length = 18  # cut after the image: allowed
    assert model(input_ids=ids, images=torch.randn(1, 3, 56, 56)).logits.shape[1] == 18


@pytest.mark.parametrize("training_side", ["right", "left"])
def test_left_padded_batch_generates_like_single(model, llama_tokenizer, monkeypatch, training_side):
    """Whatever side training padded on (trained checkpoints say "right"), generate re-pads the
    spliced batch on the left, so a row answers as it does alone."""
    monkeypatch.setattr(model.config, "tokenizer_padding_side", training_side)
    prompts = [PROMPT, "USER: <image>\nDescribe the image in detail please. ASSISTANT:"]
    seqs = [tokenizer_image_token(p, llama_tokenizer) for p in prompts]
    longest = max(map(len, seqs))
    ids = torch.tensor([[0] * (longest - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in seqs])
    images = torch.randn(2, 3, 56, 56)
    batched = model.generate(ids, images=images, attention_mask=mask, max_new_tokens=6, do_sample=False)
    for i, s in enumerate(seqs):
        single = model.generate(torch.tensor([s]), images=images[i:i + 1], max_new_tokens=6, do_sample=False)
        assert batched[i, : single.shape[1]].tolist() == single[0].tolist()


def test_generate_text_only_and_cached_decoding(model):
    ids = torch.tensor([[1, 5, 6, 7]])
    out = model.generate(ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert out.shape == (1, 4)
    # cached decoding: a single new token with images given splices nothing
    _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(
        torch.tensor([[5]]), None, None, None, None, torch.randn(1, 3, 56, 56))
    assert embeds is None


def test_prompt_of_only_the_image_token_is_spliced(model):
    """The ``plain`` (stage-1) template's prompt is just ``<image>``: one token, not a decode step."""
    ids = torch.full((3, 1), IMAGE_TOKEN_INDEX)
    images = torch.randn(3, 3, 56, 56)
    _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, images)
    assert embeds.shape == (3, 16, 64)
    batched = model.generate(ids, images=images, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert batched.shape == (3, 5)
    for i in range(3):
        single = model.generate(ids[i:i + 1], images=images[i:i + 1], max_new_tokens=5, min_new_tokens=5,
                                do_sample=False)
        assert batched[i].tolist() == single[0].tolist()


@pytest.mark.parametrize("num_items", [None, 7])
def test_training_loss_runs_lm_head_only_on_labelled_rows(model, num_items):
    """Training mode with labels: the loss and every gradient equal those of the full-logits forward
    (cross-entropy over all rows, computed here by hand), and logits is not materialised."""
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 7, 8, 0], [1, IMAGE_TOKEN_INDEX, 9, 10, 11, 12]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = ids.clone().masked_fill(ids < 0, IGNORE_INDEX)
    labels[0, :2] = IGNORE_INDEX  # a prompt without labels
    labels[0, -1] = IGNORE_INDEX  # padding
    pixels = torch.randn(2, 3, 56, 56)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    model.train()

    out = model(input_ids=ids, attention_mask=mask, labels=labels, images=pixels, **extra)
    assert out.logits is None
    grads = torch.autograd.grad(out.loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)

    _, _, attn, _, embeds, full_labels = model.prepare_inputs_labels_for_multimodal(
        ids, None, mask, None, labels, pixels)
    logits = model(inputs_embeds=embeds, attention_mask=attn).logits.float()  # no labels: the full path
    assert logits.shape[1] == embeds.shape[1]
    target = torch.nn.functional.pad(full_labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX,
                                            reduction="mean" if num_items is None else "sum")
    if num_items is not None:
        ref = ref / num_items
    ref_grads = torch.autograd.grad(ref, [p for p in model.parameters() if p.requires_grad], allow_unused=True)

    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(grads, ref_grads):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert int(target.ne(IGNORE_INDEX).sum()) == 6  # rows the head ran on: 2 + 4 labelled next tokens


def test_eval_mode_with_labels_keeps_full_logits(model):
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 9, 10]])
    model.eval()
    out = model(input_ids=ids, labels=ids.masked_fill(ids < 0, IGNORE_INDEX), images=torch.randn(1, 3, 56, 56))
    assert out.logits.shape[:2] == (1, 3 + 16) and torch.isfinite(out.loss)


def test_cache_under_either_name(model):
    """The key/value cache is taken as upstream's ``past_key_values`` or as transformers' newer
    ``cache``: a cached decoding step gives the same logits as the uncached forward either way."""
    model.eval()
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 9, 10]])
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated name is passed on
        prompt = model(input_ids=ids, images=pixels, use_cache=True)
        cache = getattr(prompt, CACHE_ARG)
        assert cache.get_seq_length() == 3 + 16
        _, _, _, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels)
        full = model(inputs_embeds=torch.cat([embeds, model.get_model().embed_tokens(torch.tensor([[11]]))], 1))
        for name in ("past_key_values", "cache"):
            step = model(input_ids=torch.tensor([[11]]), use_cache=True, **{name: copy.deepcopy(cache)})
            torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-5, rtol=1e-5)
            assert getattr(step, CACHE_ARG).get_seq_length() == 3 + 16 + 1
        model.generate(ids, images=pixels, max_new_tokens=3, do_sample=False)
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=torch.tensor([[11]]), past_key_values=copy.deepcopy(cache), cache=copy.deepcopy(cache))
