"""Helpers for the eval tests: tiny fixture files in the real formats, written to tmp_path."""

import json
from typing import Callable

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


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


# ----------------------------------------------------------------------------- model runners
# A tiny random LLaVA checkpoint saved like a real one (weights + config + tokenizer), and a
# few generated images, shared by tests/eval/test_runners.py and test_eval_scripts.py.


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tower_dir, llama_tokenizer_dir):
    """A full checkpoint folder named ``llava-tiny-mlp2x``, loadable by load_pretrained_model."""
    from transformers import AutoTokenizer

    from tests.conftest import tiny_llava_config, tiny_llava_model

    tokenizer = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    model = tiny_llava_model(tiny_llava_config(tower_dir, tokenizer, image_aspect_ratio="pad"), seed=0)
    folder = tmp_path_factory.mktemp("checkpoints") / "llava-tiny-mlp2x"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Three small PNGs of different sizes and colours: a.png, b.png, sub/c.png."""
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    for name, size, colour in (("a.png", (40, 30), "red"), ("b.png", (30, 50), "blue"),
                               ("sub/c.png", (56, 56), "green")):
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).rectangle((5, 5, size[0] // 2, size[1] // 2), fill=colour)
        image.save(folder / name)
    return str(folder)


class StandInJudge:
    """An OpenAI-compatible chat-completions server for the judge-graded benchmarks (OpenAI's own
    cannot be reached from the tests): a FastAPI app answering from a script.

    Args:
        replies: per item, a list of replies (an int is an HTTP error status to answer with, a str
            the judge's text), taken in turn, the last one repeated.
        item: which item a request body is about (e.g. the question of its message).
    """

    def __init__(self, replies: dict[str, list], item: Callable[[dict], str]):
        self.replies = {k: list(v) for k, v in replies.items()}
        self.item = item
        self.requests: list[dict] = []
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def complete(request: Request):
            body = await request.json()
            self.requests.append({"auth": request.headers.get("authorization"), **body})
            queue = self.replies[item(body)]
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
            if isinstance(reply, int):
                return JSONResponse({"error": {"message": f"scripted failure {reply}"}}, status_code=reply)
            return {"model": "judge-0613", "choices": [{"message": {"role": "assistant", "content": reply}}]}

    def asked(self) -> list[str]:
        """The item of every request so far, in order."""
        return [self.item(r) for r in self.requests]
