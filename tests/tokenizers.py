"""Tiny tokenizers built offline for tests: nothing is downloaded.

Two families matter to LLaVA:

* ``make_llama_tokenizer``: a sentencepiece BPE model laid out like Llama/Vicuna's
  (``<unk>``, ``<s>``, ``</s>`` at ids 0, 1, 2; byte fallback; a BOS added to every
  encoded text), loaded by ``AutoTokenizer`` as a ``LlamaTokenizer``.
* ``make_chatml_tokenizer``: a byte-level BPE with the ChatML special tokens
  (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` at ids 0, 1, 2) that adds no BOS,
  like SmolLM2 / Qwen2; loaded by ``AutoTokenizer`` as a ``PreTrainedTokenizerFast``.

Both are trained on the same small deterministic corpus of LLaVA-style prompts, take well
under a second, and give the same files every run. Usage::

    from transformers import AutoTokenizer
    from tests.tokenizers import make_llama_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(make_llama_tokenizer(tmp_path / "llama"))

(This module is named ``tokenizers`` inside the ``tests`` package; always import it as
``tests.tokenizers``. ``tests/__init__.py`` keeps the ``tests`` folder itself off
``sys.path``, so it never shadows the ``tokenizers`` library.)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

LLAMA_VOCAB_SIZE = 400
CHATML_VOCAB_SIZE = 500
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

_SUBJECTS = ("a cat", "two dogs", "the red car", "an old man", "a small bird", "three apples",
             "the blue sky", "a wooden table", "the city street", "a young girl")
_VERBS = ("is sitting on", "is looking at", "is next to", "is under", "is behind",
          "is holding", "is running to", "is near")
_OBJECTS = ("the grass", "a bench", "the window", "a bowl of fruit", "the snow", "a red ball",
            "the river", "a tall tree")
_QUESTIONS = (
    "What is in the image?",
    "Describe the image in detail.",
    "What color is the car?",
    "How many people are there?",
    "Is there a dog in the picture? Answer yes or no.",
    "What is the man doing?",
    "Where was this photo taken?",
    "Answer the question using a single word or phrase.",
)
_SYSTEMS = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using "
    "natural language.",
    "You are a helpful assistant.",
)


def training_corpus() -> list[str]:
    """Return the deterministic corpus (about 700 lines) both tokenizers are trained on."""
    lines = list(_SYSTEMS)
    for i, subject in enumerate(_SUBJECTS):
        for j, verb in enumerate(_VERBS):
            obj = _OBJECTS[(i + j) % len(_OBJECTS)]
            question = _QUESTIONS[(i * 3 + j) % len(_QUESTIONS)]
            sentence = f"{subject.capitalize()} {verb} {obj}."
            lines.append(sentence)
            lines.append(f"USER: {question} ASSISTANT: {sentence}")
            lines.append(f"[INST] {question} [/INST] {sentence}")
            lines.append(f"There are {i + j} objects, {i * j} in total; see item {i}{j}.")
    # Repeat so merges of the common prompt words win over rare character pairs.
    return lines * 2


def make_llama_tokenizer(directory: str | Path) -> str:
    """Train a Llama-style sentencepiece tokenizer and save it loadable by AutoTokenizer.

    Args:
        directory: folder to write ``tokenizer.model``, ``tokenizer_config.json`` and
            ``special_tokens_map.json`` into (created if missing; reused if already built).

    Returns:
        The folder as a string, for ``AutoTokenizer.from_pretrained``.
    """
    import sentencepiece as spm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / "tokenizer.model"
    if not model_file.exists():
        # Train from an iterator into a buffer: with file paths, sentencepiece records them
        # in the model and the bytes would differ from folder to folder.
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(training_corpus()),
            model_writer=buffer,
            model_type="bpe",
            vocab_size=LLAMA_VOCAB_SIZE,
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,
            # The Llama layout: unk/bos/eos at 0/1/2, no pad piece.
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            add_dummy_prefix=True,
            remove_extra_whitespaces=False,
            normalization_rule_name="identity",
            allow_whitespace_only_pieces=True,
            num_threads=1,
            minloglevel=2,
        )
        model_file.write_bytes(buffer.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 2048,
        "padding_side": "right",
    }
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json",
                {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return str(directory)


def make_chatml_tokenizer(directory: str | Path) -> str:
    """Train a byte-level BPE tokenizer with ChatML special tokens and no BOS.

    Args:
        directory: folder to write ``tokenizer.json``, ``tokenizer_config.json`` and
            ``special_tokens_map.json`` into (created if missing; reused if already built).

    Returns:
        The folder as a string, for ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.exists():
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=CHATML_VOCAB_SIZE,
            special_tokens=list(CHATML_SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
        tokenizer.save(str(tokenizer_file))
    # Qwen2-Instruct's layout: no BOS, <|im_end|> ends a turn, <|endoftext|> pads.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "padding_side": "right",
    }
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json",
                {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                 "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return str(directory)


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
