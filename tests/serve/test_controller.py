"""The controller: upstream's registry and dispatch, and a proxy that says which worker failed and how."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from llava.serve.controller import Controller, create_app
from llava.serve.model_worker import ModelWorker
from tests.serve.conftest import DyingWorker, ServerThread, free_port, stream_chunks, worker_payload

STATUS = {"model_names": ["m"], "speed": 1, "queue_length": 0}


def test_registry_dispatch_and_expiration():
    controller = Controller("shortest_queue", heart_beat_expiration=0.2)
    assert controller.register_worker("http://a", True, {**STATUS, "queue_length": 3})
    assert controller.register_worker("http://b", False, {**STATUS, "model_names": ["m", "n"]})
    assert controller.list_models() == ["m", "n"]
    assert controller.get_worker_address("m") == "http://b"  # shorter queue
    assert controller.get_worker_address("x") == ""
    assert controller.receive_heart_beat("http://a", 0) and not controller.receive_heart_beat("http://c", 0)
    time.sleep(0.3)
    assert controller.remove_stale_workers_by_expiration() == ["http://a"]  # b does not send heart beats
    lottery = Controller("lottery", seed=0)
    lottery.register_worker("http://a", True, STATUS)
    lottery.register_worker("http://b", True, {**STATUS, "speed": 3})
    picks = [lottery.get_worker_address("m") for _ in range(200)]
    assert 100 < picks.count("http://b") < 200
    with pytest.raises(ValueError, match="Invalid dispatch method 'fastest'"):
        Controller("fastest")


def test_worker_registers_and_the_proxy_streams_and_reports_failures(worker_server, chat_model):
    controller = Controller("shortest_queue")
    with ServerThread(create_app(controller)) as server:
        post = lambda path, **kw: requests.post(server.url + path, timeout=30, **kw)  # noqa: E731
        # a worker registers itself (upstream's payload) and sends heart beats
        worker = ModelWorker(chat_model, worker_server.url, controller_addr=server.url, heart_beat_interval=3600)
        worker.start_heart_beat()
        worker.stop()
        assert worker.send_heart_beat()
        assert post("/list_models").json() == {"models": [chat_model.model_name]}
        assert post("/get_worker_address", json={"model": chat_model.model_name}).json()["address"] == worker_server.url
        assert post("/receive_heart_beat", json={"worker_name": worker_server.url, "queue_length": 0}).json()["exist"]
        assert post("/refresh_all_workers").status_code == 200  # asks the worker for its status again
        assert post("/worker_get_status").json()["model_names"] == [chat_model.model_name]

        chunks = stream_chunks(server.url + "/worker_generate_stream", worker_payload(chat_model))
        assert len(chunks) >= 2 and chunks[-1]["error_code"] == 0

        missing = stream_chunks(server.url + "/worker_generate_stream", worker_payload(chat_model, model="nope"))
        assert missing == [{"text": f"No worker serves model 'nope'; models available: ['{chat_model.model_name}']",
                            "error_code": 2}]

        gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        controller.register_worker(gone, True, {**STATUS, "model_names": ["ghost"]})
        chunks = stream_chunks(server.url + "/worker_generate_stream", worker_payload(chat_model, model="ghost"))
        assert chunks[-1]["error_code"] == 3
        assert chunks[-1]["text"].startswith(f"Worker {gone} for model ghost is unreachable: ")

        with DyingWorker() as dying:
            controller.register_worker(dying.url, True, {**STATUS, "model_names": ["fragile"]})
            chunks = stream_chunks(server.url + "/worker_generate_stream", worker_payload(chat_model, model="fragile"))
        assert chunks[0]["error_code"] == 0 and chunks[0]["text"].endswith("The answer starts")
        assert chunks[-1]["error_code"] == 3
        assert chunks[-1]["text"].startswith(f"Worker {dying.url} for model fragile stopped mid-answer: ")

        # refresh drops the workers that do not answer; the real one stays and still answers
        assert post("/refresh_all_workers").json()["models"] == [chat_model.model_name]
        chunks = stream_chunks(server.url + "/worker_generate_stream", worker_payload(chat_model))
        assert chunks[-1]["error_code"] == 0


def test_workers_stay_listed_while_a_refresh_polls_them(worker_server, chat_model):
    controller = Controller("shortest_queue")
    with socket.socket() as silent:  # a worker that accepts the status request and has not answered yet
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(30)
        silent_url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        controller.register_worker(silent_url, True, {**STATUS, "model_names": ["other"]})
        controller.register_worker(worker_server.url, True, None)
        refresh = threading.Thread(target=controller.refresh_all_workers)
        refresh.start()
        conn, _ = silent.accept()  # the refresh now waits for the silent worker's answer
        with conn:
            assert controller.list_models() == sorted([chat_model.model_name, "other"])
            assert controller.get_worker_address(chat_model.model_name) == worker_server.url
        refresh.join(30)  # the connection closed without an answer: that worker is dropped
    assert not refresh.is_alive()
    assert controller.list_models() == [chat_model.model_name]


def test_bad_request_bodies_get_messages_not_bare_500s():
    with ServerThread(create_app(Controller("shortest_queue"))) as server:
        stream = server.url + "/worker_generate_stream"
        assert stream_chunks(stream, b"[1, 2]") == [
            {"text": "The request body is not a JSON object: expected a JSON object, got list", "error_code": 1}]
        chunks = stream_chunks(stream, b"{not json")
        assert chunks[0]["error_code"] == 1 and chunks[0]["text"].startswith("The request body is not a JSON object: ")
        for path, body, message in [
            ("/get_worker_address", {}, "The request body has no 'model'"),
            ("/register_worker", {"worker_status": STATUS}, "The request body has no 'worker_name'"),
            ("/register_worker", b"not json", "The request body is not a JSON object: "),
            ("/receive_heart_beat", {"worker_name": "http://a", "queue_length": "many"},
             "queue_length must be an integer, got 'many'"),
        ]:
            kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
            response = requests.post(server.url + path, timeout=10, **kwargs)
            assert response.status_code == 400 and response.json()["detail"].startswith(message), response.text
