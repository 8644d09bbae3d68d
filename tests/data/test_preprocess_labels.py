"""Label masks at the edges of a sample: the plain template's closing separator, a leading assistant turn."""

from __future__ import annotations

import pytest

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.preprocess import conversation_template, preprocess, preprocess_multimodal
from llava.mm_utils import tokenizer_image_token

TURNS = [
    {"from": "human", "value": "<image>\nWhat is in the image?"},
    {"from": "gpt", "value": "A cat is sitting on the grass."},
    {"from": "human", "value": "How many cats?"},
    {"from": "gpt", "value": "One."},
]


def test_plain_template_trains_the_caption_and_its_closing_newline(llama_tokenizer):
    """Upstream's plain target is caption + sep ("\\n"): the last token, the newline, is trained."""
    conv = conversation_template("plain")
    turns = [{"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": "A red car."}]
    result = preprocess(preprocess_multimodal(turns, mm_use_im_start_end=False, version="plain"), llama_tokenizer, conv)
    assert result.mismatch is None
    assert result.input_ids == tokenizer_image_token("<image>A red car.\n", llama_tokenizer)
    assert llama_tokenizer.decode(result.input_ids[-1:]) == "\n"
    assert result.labels[-1] == result.input_ids[-1] != IGNORE_INDEX
    # BOS and the image are masked; every other token, caption and newline, is its own label
    assert result.input_ids[1] == IMAGE_TOKEN_INDEX
    assert result.labels == [IGNORE_INDEX, IGNORE_INDEX] + result.input_ids[2:]


@pytest.mark.parametrize("version", ["v1", "plain"])
def test_a_leading_assistant_turn_is_skipped(llama_tokenizer, version):
    """As upstream: a conversation that opens with the assistant is trained as if that turn were not there."""
    conv = conversation_template(version)
    turns = TURNS[:2] if version == "plain" else TURNS
    leading = [{"from": "gpt", "value": "Hello, ask me about the image."}]
    without = preprocess(preprocess_multimodal(turns, mm_use_im_start_end=False, version=version),
                         llama_tokenizer, conv)
    with_lead = preprocess(preprocess_multimodal(leading + turns, mm_use_im_start_end=False, version=version),
                           llama_tokenizer, conv)
    assert without.mismatch is None and with_lead.mismatch is None
    assert with_lead.input_ids == without.input_ids
    assert with_lead.labels == without.labels
    assert "Hello" not in llama_tokenizer.decode([t for t in with_lead.input_ids if t >= 0])
