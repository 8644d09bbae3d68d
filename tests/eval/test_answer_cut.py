"""generate_texts cuts each row at its first end-of-sequence token, whatever the model wrote after it."""

from __future__ import annotations

import torch

from llava.eval import runner


class FixedOutputModel:
    """Returns fixed new tokens from ``generate``, as LlavaLlamaForCausalLM.generate does (only the
    new tokens); the decoding and cutting under test are generate_texts' own."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, rows, eos_token_id):
        self.rows = rows
        self.generation_config = type("GenerationConfig", (), {"eos_token_id": eos_token_id})()

    def generate(self, input_ids, **kwargs):
        assert input_ids.shape[0] == len(self.rows)
        return torch.tensor(self.rows)


def _tokens(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


def test_text_after_eos_is_dropped(llama_tokenizer):
    eos = llama_tokenizer.eos_token_id
    no, garbage = _tokens(llama_tokenizer, "No"), _tokens(llama_tokenizer, "garbage")
    yes = _tokens(llama_tokenizer, "Yes indeed")
    width = max(len(no) + 1 + len(garbage), len(yes))
    rows = [no + [eos] + garbage, yes]
    rows = [r + [eos] * (width - len(r)) for r in rows]
    model = FixedOutputModel(rows, eos)
    texts = runner.generate_texts(model, llama_tokenizer, ["USER: Hi? ASSISTANT:"] * 2, [None, None], [None, None],
                                  runner.GenerationSettings(max_new_tokens=width), None)
    assert texts == ["No", "Yes indeed"]


def test_the_model_s_own_eos_ids_cut_too(llama_tokenizer):
    """A generation config may name an eos that is an ordinary token for the tokenizer (not hidden by
    skip_special_tokens): the row still ends there."""
    stop = _tokens(llama_tokenizer, ".")[-1]
    rows = [_tokens(llama_tokenizer, "Red") + [stop] + _tokens(llama_tokenizer, "and blue")]
    model = FixedOutputModel(rows, [stop])
    texts = runner.generate_texts(model, llama_tokenizer, ["USER: Colour? ASSISTANT:"], [None], [None],
                                  runner.GenerationSettings(max_new_tokens=8), None)
    assert texts == ["Red"]
