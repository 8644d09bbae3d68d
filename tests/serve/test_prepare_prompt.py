"""ChatModel.prepare: image start/end markers for models trained with them, and the prompt length budget."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, IMAGE_TOKEN_INDEX
from llava.serve.inference import ChatModel, RequestError
from tests.conftest import tiny_llava_config, tiny_llava_model

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"


@pytest.fixture()
def start_end_model(tower_dir, llama_tokenizer):
    """A model trained with --mm_use_im_start_end: its tokenizer has <im_start>/<im_end>."""
    llama_tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    model = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer, mm_use_im_start_end=True))
    return llama_tokenizer, model


def chat(tokenizer, model, context_len=512):
    return ChatModel(tokenizer, model, model.get_vision_tower().image_processor, context_len, "tiny",
                     conv_mode="vicuna_v1")


def test_start_end_markers_wrap_the_image(start_end_model):
    tokenizer, model = start_end_model
    start, end = tokenizer.convert_tokens_to_ids([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN])
    prepared = chat(tokenizer, model).prepare(PROMPT, [Image.new("RGB", (40, 30), "red")])
    ids = prepared.input_ids[0].tolist()
    at = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[at - 1:at + 2] == [start, IMAGE_TOKEN_INDEX, end]
    assert ids.count(start) == ids.count(end) == ids.count(IMAGE_TOKEN_INDEX) == 1


def test_prompt_length_counts_the_visual_tokens_in_place_of_the_image_token(start_end_model):
    """The image token becomes ``visual`` tokens: T - 1 + visual; exactly context - 1 still leaves
    room for one answer token, exactly the context does not."""
    tokenizer, model = start_end_model
    image = Image.new("RGB", (40, 30), "red")
    prepared = chat(tokenizer, model).prepare(PROMPT, [image])
    visual = model.num_image_tokens()
    assert prepared.visual_tokens == visual == 16
    total = prepared.input_ids.shape[1] - 1 + visual
    assert prepared.prompt_tokens == total
    # and what the model is actually fed with the image spliced in
    with torch.no_grad():
        embeds = model.prepare_inputs_labels_for_multimodal(prepared.input_ids, None, None, None, None,
                                                            prepared.images)[4]
    assert embeds.shape[1] == total
    assert chat(tokenizer, model, context_len=total + 1).prepare(PROMPT, [image]).prompt_tokens == total
    with pytest.raises(RequestError, match=f"Prompt too long: {total} tokens \\({visual} of them visual\\)"):
        chat(tokenizer, model, context_len=total).prepare(PROMPT, [image])
