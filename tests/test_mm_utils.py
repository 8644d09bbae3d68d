"""Image preprocessing, image-token splicing ids, model naming and stopping criteria."""

from __future__ import annotations

import base64
from io import BytesIO
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, StoppingCriteriaList

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    expand2square,
    get_model_name_from_path,
    load_image_from_base64,
    process_images,
    tokenizer_image_token,
)
from tests.tokenizers import make_chatml_tokenizer, make_llama_tokenizer

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def llama_tok(tmp_path_factory):
    return AutoTokenizer.from_pretrained(make_llama_tokenizer(tmp_path_factory.mktemp("llama")))


@pytest.fixture(scope="module")
def chatml_tok(tmp_path_factory):
    return AutoTokenizer.from_pretrained(make_chatml_tokenizer(tmp_path_factory.mktemp("chatml")))


@pytest.fixture(scope="module")
def image_processor():
    return CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})


# ------------------------------------------------------------------------ tokenizer helpers


def test_llama_tokenizer_layout(llama_tok):
    assert type(llama_tok).__name__ == "LlamaTokenizer"
    assert llama_tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert llama_tok("hi").input_ids[0] == llama_tok.bos_token_id == 1
    assert llama_tok.eos_token_id == 2


def test_chatml_tokenizer_layout(chatml_tok):
    assert chatml_tok.bos_token_id is None
    assert chatml_tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert chatml_tok("<|im_end|>").input_ids == [2]
    assert chatml_tok.decode(chatml_tok("Hello there.\n").input_ids) == "Hello there.\n"


def test_tokenizer_helpers_are_deterministic(tmp_path):
    for make in (make_llama_tokenizer, make_chatml_tokenizer):
        a, b = make(tmp_path / f"{make.__name__}_a"), make(tmp_path / f"{make.__name__}_b")
        files = sorted(p.name for p in (tmp_path / a).iterdir())
        assert files == sorted(p.name for p in (tmp_path / b).iterdir())
        for name in files:
            assert (tmp_path / a / name).read_bytes() == (tmp_path / b / name).read_bytes(), name


# ------------------------------------------------------------------------ images


def test_expand2square_wide_and_tall():
    wide = expand2square(Image.new("RGB", (40, 20), RED), (1, 2, 3))
    assert wide.size == (40, 40)
    assert wide.getpixel((20, 0)) == (1, 2, 3) and wide.getpixel((20, 39)) == (1, 2, 3)
    # Centred: rows 10..29 hold the image.
    assert wide.getpixel((0, 10)) == RED and wide.getpixel((39, 29)) == RED
    assert wide.getpixel((0, 9)) == (1, 2, 3) and wide.getpixel((0, 30)) == (1, 2, 3)

    tall = expand2square(Image.new("RGB", (21, 50), RED), (9, 9, 9))
    assert tall.size == (50, 50)
    assert tall.getpixel((14, 25)) == RED and tall.getpixel((34, 25)) == RED  # offset (50-21)//2 = 14
    assert tall.getpixel((13, 25)) == (9, 9, 9) and tall.getpixel((35, 25)) == (9, 9, 9)


def test_expand2square_square_is_unchanged():
    image = Image.new("RGB", (16, 16), RED)
    assert expand2square(image, (0, 0, 0)) is image


def _normalized(color, processor):
    return torch.tensor([(c / 255 - m) / s for c, m, s in
                         zip(color, processor.image_mean, processor.image_std)])


@pytest.mark.parametrize("cfg", [
    SimpleNamespace(image_aspect_ratio="pad"), {"image_aspect_ratio": "pad"},
])
def test_process_images_pad(image_processor, cfg):
    image = Image.new("RGB", (40, 20), RED)
    pixels = process_images([image, image], image_processor, cfg)
    assert pixels.shape == (2, 3, 28, 28) and pixels.dtype == torch.float32
    mean_fill = tuple(int(x * 255) for x in image_processor.image_mean)
    # Top / bottom quarter is the mean colour, normalised to ~0; the centre is the red image.
    fill = _normalized(mean_fill, image_processor)
    torch.testing.assert_close(pixels[0, :, 0, 14], fill, atol=1e-4, rtol=0)
    assert pixels[0, :, 0, 14].abs().max() < 0.02
    torch.testing.assert_close(pixels[0, :, 27, 14], pixels[0, :, 0, 14])
    torch.testing.assert_close(pixels[0, :, 14, 14], _normalized(RED, image_processor), atol=1e-4, rtol=0)


@pytest.mark.parametrize("cfg", [
    None, SimpleNamespace(), SimpleNamespace(image_aspect_ratio="square"), {"image_aspect_ratio": None},
])
def test_process_images_square_crops(image_processor, cfg):
    image = Image.new("RGB", (40, 20), RED)
    pixels = process_images([image], image_processor, cfg)
    assert pixels.shape == (1, 3, 28, 28)
    # Resize + centre crop keeps only red: no fill anywhere.
    expected = _normalized(RED, image_processor)[:, None, None].expand(3, 28, 28)
    torch.testing.assert_close(pixels[0], expected, atol=1e-4, rtol=0)


def test_process_images_matches_processor_batch_call(image_processor):
    images = [Image.new("RGB", (40, 20), RED), Image.new("RGB", (20, 30), (0, 128, 255))]
    expected = image_processor(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(process_images(images, image_processor, None), expected)


def test_process_images_returns_list_when_shapes_differ():
    class NoCropProcessor:
        image_mean = (0.5, 0.5, 0.5)

        def preprocess(self, image, return_tensors):
            w, h = image.size
            return {"pixel_values": torch.zeros(1, 3, h, w)}

    images = [Image.new("RGB", (4, 2)), Image.new("RGB", (6, 2))]
    out = process_images(images, NoCropProcessor(), {"image_aspect_ratio": None})
    assert isinstance(out, list) and [t.shape for t in out] == [(3, 2, 4), (3, 2, 6)]
    # Padding makes (4, 2) and (2, 4) both 4 x 4, so they stack.
    images = [Image.new("RGB", (4, 2)), Image.new("RGB", (2, 4))]
    same = process_images(images, NoCropProcessor(), {"image_aspect_ratio": "pad"})
    assert isinstance(same, torch.Tensor) and same.shape == (2, 3, 4, 4)


def test_load_image_from_base64():
    buffer = BytesIO()
    Image.new("RGB", (5, 3), RED).save(buffer, format="PNG")
    image = load_image_from_base64(base64.b64encode(buffer.getvalue()).decode())
    assert image.size == (5, 3) and image.convert("RGB").getpixel((0, 0)) == RED


# ------------------------------------------------------------------------ tokenizer_image_token

PROMPTS = [
    "<image>\nWhat is in the image?",                       # tag at start
    "USER: <image>\nWhat is in the image? ASSISTANT:",      # middle
    "Describe the image in detail.<image>",                  # end
    "<image>\nA red car. <image>\nWhat color is the car?",   # two tags
    "<image><image>",                                        # adjacent tags only
    "What is in the image?",                                 # no tag
]


def _segments(ids):
    out, cur = [], []
    for i in ids:
        if i == IMAGE_TOKEN_INDEX:
            out.append(cur)
            cur = []
        else:
            cur.append(i)
    return out + [cur]


@pytest.mark.parametrize("which", ["llama", "chatml"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokenizer_image_token(request, which, prompt):
    tok = request.getfixturevalue(f"{which}_tok")
    ids = tokenizer_image_token(prompt, tok)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert ids.count(IMAGE_TOKEN_INDEX) == prompt.count("<image>")
    chunks = prompt.split("<image>")
    segments = _segments(ids)
    assert len(segments) == len(chunks)
    if tok.bos_token_id is not None:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    # Each chunk is tokenized on its own (upstream's ids), minus the repeated BOS.
    for i, (chunk, segment) in enumerate(zip(chunks, segments)):
        expected = tok(chunk).input_ids
        if i > 0 and tok.bos_token_id is not None:
            expected = expected[1:]
        assert segment == expected
        # And the text round-trips around the image tokens.
        assert tok.decode(segment, skip_special_tokens=True) == chunk


def test_tokenizer_image_token_positions(llama_tok, chatml_tok):
    bos = llama_tok.bos_token_id
    assert tokenizer_image_token("<image>\nHi", llama_tok)[:2] == [bos, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("<image>\nHi", chatml_tok)[0] == IMAGE_TOKEN_INDEX
    assert tokenizer_image_token("Hi<image>", llama_tok)[-1] == IMAGE_TOKEN_INDEX
    assert tokenizer_image_token("Hi<image>", chatml_tok)[-1] == IMAGE_TOKEN_INDEX
    assert tokenizer_image_token("<image><image>", llama_tok) == [bos, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("<image>", chatml_tok) == [IMAGE_TOKEN_INDEX]
    assert tokenizer_image_token("<image>", llama_tok, image_token_index=-7) == [bos, -7]


def test_tokenizer_image_token_on_template_prompt(llama_tok):
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is in the image?")
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    ids = tokenizer_image_token(prompt, llama_tok)
    before, after = prompt.split("<image>")
    assert ids == llama_tok(before).input_ids + [IMAGE_TOKEN_INDEX] + llama_tok(after).input_ids[1:]


def test_tokenizer_image_token_return_tensors(chatml_tok):
    ids = tokenizer_image_token("A <image> B", chatml_tok, return_tensors="pt")
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.long and ids.dim() == 1
    assert ids.tolist() == tokenizer_image_token("A <image> B", chatml_tok)
    with pytest.raises(ValueError, match="np"):
        tokenizer_image_token("A <image> B", chatml_tok, return_tensors="np")


# ------------------------------------------------------------------------ model names


@pytest.mark.parametrize("path, name", [
    ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
    ("/ckpt/llava-v1.5-7b/", "llava-v1.5-7b"),
    ("/ckpt/llava-v1.5-7b/checkpoint-100", "llava-v1.5-7b_checkpoint-100"),
    ("/ckpt/llava-v1.5-7b/checkpoint-100/", "llava-v1.5-7b_checkpoint-100"),
    ("llava-v1.5-13b-lora", "llava-v1.5-13b-lora"),
    ("checkpoint-5", "checkpoint-5"),
])
def test_get_model_name_from_path(path, name):
    assert get_model_name_from_path(path) == name


# ------------------------------------------------------------------------ stopping criteria


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_keywords_stopping_batched_with_prompt(chatml_tok):
    conv = conv_templates["chatml"].copy()
    conv.append_message(conv.roles[0], "What is in the image?")
    conv.append_message(conv.roles[1], None)
    prompt = _ids(chatml_tok, conv.get_prompt())
    assert 2 in prompt  # the prompt itself contains <|im_end|>: it must not count
    end = chatml_tok.convert_tokens_to_ids("<|im_end|>")
    prompts = torch.tensor([prompt, prompt])
    criteria = KeywordsStoppingCriteria([conv.stop_str], chatml_tok, prompts)

    a, b = _ids(chatml_tok, "A cat"), _ids(chatml_tok, "Two dogs")
    n = max(len(a), len(b)) + 1
    rows = [a + [end] + [0] * (n - len(a) - 1), b + [0] * (n - len(b))]
    out = torch.cat([prompts, torch.tensor(rows)], dim=1)
    done = criteria(out, None)
    assert done.dtype == torch.bool and done.tolist() == [True, False]

    # First step: nothing new yet looks like a keyword, though the prompt ends in one.
    first = torch.cat([prompts, torch.tensor([[a[0]], [b[0]]])], dim=1)
    assert criteria(first, None).tolist() == [False, False]


def test_keywords_stopping_new_tokens_only(chatml_tok):
    """generate(inputs_embeds=...) hands the criteria only the generated ids."""
    end = chatml_tok.convert_tokens_to_ids("<|im_end|>")
    prompt = torch.tensor([[IMAGE_TOKEN_INDEX] + _ids(chatml_tok, "What is in the image?")] * 3)
    criteria = KeywordsStoppingCriteria(["<|im_end|>"], chatml_tok, prompt)
    assert criteria(torch.tensor([[end], [5], [7]]), None).tolist() == [True, False, False]
    # Longer than the prompt, still only new tokens.
    long_text = _ids(chatml_tok, "a cat is sitting on the grass and a dog is next to the window")
    assert len(long_text) > prompt.shape[1]
    rows = torch.tensor([long_text + [end], long_text + [5], [end] + long_text])
    assert criteria(rows, None).tolist() == [True, False, False]
    # Empty (nothing generated yet).
    assert criteria(torch.zeros(3, 0, dtype=torch.long), None).tolist() == [False] * 3


def test_keywords_stopping_text_match_across_tokens(llama_tok):
    prompt = torch.tensor([_ids(llama_tok, "USER: hi ASSISTANT:")] * 2)
    criteria = KeywordsStoppingCriteria(["###"], llama_tok, prompt)
    hit, miss = _ids(llama_tok, "A cat.###"), _ids(llama_tok, "A cat.##")
    assert len(hit) == len(miss) + 1
    # "###" is spelled by several tokens, not by the keyword's own ids ("▁###").
    assert hit[-len(criteria.keyword_ids[0]):] != criteria.keyword_ids[0].tolist()
    unk = llama_tok.unk_token_id
    new = torch.tensor([hit, miss + [unk]])
    assert criteria(new, None).tolist() == [True, False]
    assert criteria(torch.cat([prompt, new], dim=1), None).tolist() == [True, False]


def test_keywords_stopping_eos_ids(llama_tok):
    prompt = torch.tensor([[1, 20, 30]])
    criteria = KeywordsStoppingCriteria([conv_templates["vicuna_v1"].stop_str], llama_tok, prompt)
    assert criteria.keyword_ids[0].tolist() == [llama_tok.eos_token_id]
    out = torch.tensor([[1, 20, 30, 40, 2], [1, 20, 30, 40, 41]])
    assert criteria(out, None).tolist() == [True, False]
    # Works inside a StoppingCriteriaList, as generate uses it.
    assert StoppingCriteriaList([criteria])(out, None).tolist() == [True, False]


def test_keywords_stopping_rejects_empty_keywords(llama_tok):
    with pytest.raises(ValueError, match="keyword"):
        KeywordsStoppingCriteria([""], llama_tok, torch.tensor([[1]]))


def test_keywords_stopping_in_real_generate_with_inputs_embeds(chatml_tok):
    """Rows stop independently in transformers' generate loop fed with inputs_embeds."""
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(chatml_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=None, eos_token_id=None, pad_token_id=0)).eval()
    end = chatml_tok.convert_tokens_to_ids("<|im_end|>")
    scripts = [[40, 41, end, 42, 43, 44, 45, 46], [40, 41, 42, 43, end, 44, 45, 46]]

    class Force(LogitsProcessor):
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1]  # only new ids with inputs_embeds
            forced = torch.full_like(scores, -1e9)
            for row in range(scores.shape[0]):
                forced[row, scripts[row][step]] = 0.0
            return forced

    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    prompt_ids = torch.tensor([_ids(chatml_tok, prompt)] * 2)
    embeds = model.get_input_embeddings()(prompt_ids)
    criteria = KeywordsStoppingCriteria(["<|im_end|>"], chatml_tok, prompt_ids)
    out = model.generate(
        inputs_embeds=embeds, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=8,
        do_sample=False, logits_processor=LogitsProcessorList([Force()]),
        stopping_criteria=StoppingCriteriaList([criteria]), pad_token_id=0,
        # An EOS the script never emits: stopping comes from the keyword, and with an EOS
        # configured, transformers pads the rows that are already done.
        eos_token_id=chatml_tok.convert_tokens_to_ids("<|im_start|>"))
    assert out.tolist() == [[40, 41, end, 0, 0], [40, 41, 42, 43, end]]


def test_keywords_stopping_any_keyword_spelled_one_character_per_token(chatml_tok):
    """A model can write a stop string in more tokens than the string's own ids (here one per
    character): the decoded tail is long enough to find it, and any one of the keywords stops the row."""
    keyword = "the grass"
    criteria = KeywordsStoppingCriteria([keyword, "<|im_end|>"], chatml_tok,
                                        torch.tensor([_ids(chatml_tok, "USER: hi")]))
    chars = chatml_tok.convert_tokens_to_ids(["Ġ" if ch == " " else ch for ch in keyword])
    assert chatml_tok.decode(chars) == keyword and len(chars) > len(criteria.keyword_ids[0]) + 1
    other = chatml_tok.convert_tokens_to_ids("x")
    rows = torch.tensor([[other] + chars, [other] + chars[:-1] + [other]])
    assert criteria(rows, None).tolist() == [True, False]


def test_keywords_stopping_ignores_a_stop_string_that_ends_the_prompt(chatml_tok):
    """The plain template's prompt ends with its own stop string ("\\n"): the answer is not cut
    before it starts, and stops at its own newline."""
    conv = conv_templates["plain"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is this?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt().endswith(conv.stop_str)
    prompt = tokenizer_image_token(conv.get_prompt(), chatml_tok)
    criteria = KeywordsStoppingCriteria([conv.stop_str], chatml_tok, torch.tensor([prompt]))
    word, newline = _ids(chatml_tok, "A"), _ids(chatml_tok, "\n")
    assert criteria(torch.tensor([prompt + word]), None).tolist() == [False]
    assert criteria(torch.tensor([prompt + word + newline]), None).tolist() == [True]
