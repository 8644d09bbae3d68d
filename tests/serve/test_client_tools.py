"""Upstream's command-line clients of a deployment: ``test_message`` and ``register_worker``, against
a real controller and model worker on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from llava.serve import register_worker, test_message
from llava.serve.controller import Controller, create_app
from tests.serve.conftest import ServerThread, draw_image, free_port

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}


def greedy_answer(chat_model, text: str, image=None, max_new_tokens: int = 6) -> tuple[str, str]:
    """The prompt and the greedy answer of the model in this process (the reference)."""
    conv = chat_model.new_conversation()
    conv.append_message(conv.roles[0], (f"<image>\n{text}", image, "Default") if image is not None else text)
    conv.append_message(conv.roles[1], None)
    *_, last = chat_model.stream(conv.get_prompt(), conv.get_images(return_pil=True), temperature=0,
                                 max_new_tokens=max_new_tokens, stop=conv.stop_str)
    return conv.get_prompt(), last.text.strip()


def run_test_message(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = test_message.send_message(test_message.build_parser().parse_args(list(argv)), out=out)
    return code, out.getvalue()


def test_register_worker_then_test_message_through_the_controller(worker_server, chat_model, tmp_path, capsys):
    image_path = tmp_path / "circle.png"
    draw_image().save(image_path)
    with ServerThread(create_app(Controller("shortest_queue"))) as controller:
        # the worker was started without a controller: nothing is served yet
        code, _ = run_test_message("--controller-address", controller.url)
        assert code == 1 and f"No models are served by controller {controller.url}" in capsys.readouterr().err

        models = register_worker.register(controller.url, worker_server.url, check_heart_beat=False)
        assert models == [chat_model.model_name]

        code, out = run_test_message("--controller-address", controller.url, "--image-file", str(image_path),
                                     "--message", "What is in the image?", "--temperature", "0",
                                     "--max-new-tokens", "6")
        assert code == 0, capsys.readouterr().err
        prompt, answer = greedy_answer(chat_model, "What is in the image?", draw_image())
        assert answer
        assert out == f"models: {[chat_model.model_name]}\n{prompt}{answer}\n"

        # a text-only message, and the model named explicitly
        code, out = run_test_message("--controller-address", controller.url, "--model-name", chat_model.model_name,
                                     "--message", "Hello", "--temperature", "0", "--max-new-tokens", "4")
        prompt, answer = greedy_answer(chat_model, "Hello", max_new_tokens=4)
        assert code == 0 and out.endswith(f"{prompt}{answer}\n")

        code, _ = run_test_message("--controller-address", controller.url, "--model-name", "other")
        assert code == 1
        assert (f"Model 'other' is not served by controller {controller.url}; "
                f"models available: {[chat_model.model_name]}") in capsys.readouterr().err


def test_test_message_straight_to_a_worker(worker_server, chat_model):
    code, out = run_test_message("--worker-address", worker_server.url, "--message", "Hello", "--temperature", "0",
                                 "--max-new-tokens", "4")
    prompt, answer = greedy_answer(chat_model, "Hello", max_new_tokens=4)
    assert code == 0 and out == f"models: {[chat_model.model_name]}\n{prompt}{answer}\n"


def test_test_message_says_what_failed(worker_server, tmp_path, capsys):
    nobody = f"http://127.0.0.1:{free_port()}"
    assert run_test_message("--controller-address", nobody)[0] == 1
    assert f"test_message: Controller {nobody} is unreachable: " in capsys.readouterr().err
    assert run_test_message("--worker-address", nobody)[0] == 1
    assert f"test_message: Worker {nobody} is unreachable: " in capsys.readouterr().err

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    assert run_test_message("--worker-address", worker_server.url, "--image-file", str(not_an_image))[0] == 1
    assert str(not_an_image) in capsys.readouterr().err

    # a controller with two models: which one must be said
    with ServerThread(create_app(Controller("shortest_queue"))) as controller, \
            ServerThread(status_only_worker("second")) as second:
        register_worker.register(controller.url, worker_server.url, False)
        register_worker.register(controller.url, second.url, False)
        assert run_test_message("--controller-address", controller.url)[0] == 1
        assert (f"controller {controller.url} serves several models {sorted([worker_server.worker.model_name, 'second'])}: "
                "choose one with --model-name") in capsys.readouterr().err


def status_only_worker(model_name: str) -> FastAPI:
    """A worker that only reports its status (enough to be registered and listed)."""
    app = FastAPI()

    @app.post("/worker_get_status")
    async def status():
        return {"model_names": [model_name], "speed": 1, "queue_length": 0}

    return app


def test_register_worker_says_whether_the_controller_or_the_worker_failed(worker_server):
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match=f"Controller {nobody} is unreachable: "):
        register_worker.register(nobody, worker_server.url, True)
    with ServerThread(create_app(Controller("shortest_queue"))) as controller:
        with pytest.raises(RuntimeError, match=f"Controller {controller.url} could not read the status of worker "
                                               f"{nobody} \\({nobody}/worker_get_status\\)"):
            register_worker.register(controller.url, nobody, True)
        # the command line: exit codes and messages
        ok = subprocess.run([sys.executable, "-m", "llava.serve.register_worker", "--controller-address", controller.url,
                             "--worker-name", worker_server.url + "/", "--check-heart-beat"],
                            capture_output=True, text=True, env=ENV, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == (f"Registered {worker_server.url} with {controller.url}; "
                             f"models served: {[worker_server.worker.model_name]}\n")
        bad = subprocess.run([sys.executable, "-m", "llava.serve.register_worker", "--controller-address", controller.url,
                              "--worker-name", nobody], capture_output=True, text=True, env=ENV, timeout=120)
        assert bad.returncode == 1 and bad.stderr.startswith(f"register_worker: Controller {controller.url} could not")


def test_test_message_command_line(worker_server, chat_model):
    run = subprocess.run([sys.executable, "-m", "llava.serve.test_message", "--worker-address", worker_server.url,
                          "--message", "Hello", "--temperature", "0", "--max-new-tokens", "4"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    prompt, answer = greedy_answer(chat_model, "Hello", max_new_tokens=4)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"models: {[chat_model.model_name]}\n{prompt}{answer}\n"
    nobody = f"http://127.0.0.1:{free_port()}"
    failed = subprocess.run([sys.executable, "-m", "llava.serve.test_message", "--controller-address", nobody],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert failed.returncode == 1 and failed.stderr.startswith(f"test_message: Controller {nobody} is unreachable: ")


def test_test_message_refuses_an_empty_image_file(capsys):
    """An empty --image-file (an unset shell variable) is a mistake, not a request to send text only."""
    with pytest.raises(SystemExit) as exit_info:
        test_message.main(["--worker-address", "http://127.0.0.1:9", "--image-file", " "])
    assert exit_info.value.code == 2
    assert "--image-file is empty: give an image file or URL" in capsys.readouterr().err


def test_worker_backend_sends_upstreams_request_and_shows_only_the_reply():
    """Upstream's worker streams the prompt and the reply so far: the client shows the reply, stripped.
    It caps max_new_tokens at upstream's 1536 and takes a worker URL given with a trailing slash."""
    from llava.serve.client import WorkerBackend

    received = []
    app = FastAPI()

    @app.post("/worker_get_status")
    async def status():
        return {"model_names": ["m"], "speed": 1, "queue_length": 0, "conv_mode": "vicuna_v1"}

    @app.post("/worker_generate_stream")
    async def generate(request: Request):
        params = await request.json()
        received.append(params)
        return StreamingResponse(json.dumps({"text": params["prompt"] + text, "error_code": 0}).encode() + b"\0"
                                 for text in (" A", " A cat.\n"))

    with ServerThread(app) as worker:
        backend = WorkerBackend(worker.url + "/")
        assert backend.list_models() == ["m"]
        conv = backend.new_conversation("m")
        conv.append_message(conv.roles[0], "Hi")
        conv.append_message(conv.roles[1], None)
        chunks = list(backend.stream("m", conv, temperature=0.2, top_p=0.7, max_new_tokens=5000))
    assert [(c.text, c.error) for c in chunks] == [("A", None), ("A cat.", None)]
    [params] = received
    assert (params["model"], params["prompt"], params["stop"], params["images"]) == ("m", conv.get_prompt(), "</s>", [])
    assert (params["temperature"], params["top_p"], params["max_new_tokens"]) == (0.2, 0.7, 1536)
