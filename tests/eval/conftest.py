"""Helpers for the eval tests: tiny fixture files in the real formats, written to tmp_path."""

import json

import pytest


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def answer(question_id, text, prompt="", **extra):
    """One line of a LLaVA answer file."""
    return {"question_id": question_id, "prompt": prompt, "text": text, "answer_id": "x",
            "model_id": "llava-test", "metadata": {}, **extra}


@pytest.fixture
def jsonl():
    return write_jsonl


@pytest.fixture
def json_file():
    return write_json
