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


def test_heart_beats_keep_a_worker_listed_and_report_its_queue():
    controller = Controller("shortest_queue", heart_beat_expiration=1.0)
    controller.register_worker("http://a", True, {**STATUS, "queue_length": 5})
    controller.register_worker("http://b", True, {**STATUS, "queue_length": 2})
    assert controller.get_worker_address("m") == "http://b"
    assert controller.receive_heart_beat("http://a", 0)  # a is idle now
    assert controller.get_worker_address("m") == "http://a"
    time.sleep(1.2)  # a's beat and the sweep below are a second apart at most, even on a loaded machine
    assert controller.receive_heart_beat("http://a", 1)  # a is alive, b silent
    assert controller.remove_stale_workers_by_expiration() == ["http://b"]
    assert controller.list_models() == ["m"]


def test_shortest_queue_counts_dispatched_requests_and_worker_speed():
    controller = Controller("shortest_queue")
    for name in ("http://a", "http://b"):
        controller.register_worker(name, False, STATUS)
    # each request joins the queue of the worker it went to, until that worker's next heart beat
    assert [controller.get_worker_address("m") for _ in range(4)] == ["http://a", "http://b"] * 2
    fast = Controller("shortest_queue")
    fast.register_worker("http://fast", False, {**STATUS, "queue_length": 2, "speed": 4})
    fast.register_worker("http://slow", False, {**STATUS, "queue_length": 1, "speed": 1})
    assert fast.get_worker_address("m") == "http://fast"  # 2 queued at 4x speed wait less than 1 at 1x


def test_lottery_picks_in_proportion_to_speed():
    lottery = Controller("lottery", seed=0)
    for name, speed in (("http://a", 1), ("http://b", 3), ("http://stopped", 0)):
        lottery.register_worker(name, False, {**STATUS, "speed": speed})
    picks = [lottery.get_worker_address("m") for _ in range(400)]
    assert "http://stopped" not in picks
    assert 260 < picks.count("http://b") < 340  # 3 of 4 on average


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


def _silent_worker() -> tuple[socket.socket, str]:
    """A listening socket that accepts a status request and leaves it unanswered."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    silent.settimeout(30)
    return silent, "http://127.0.0.1:%d" % silent.getsockname()[1]


def test_a_refresh_polls_every_worker_at_once():
    """Two silent workers: both are asked before either answers, so a refresh takes one worker's
    time-out at most (polled in turn, it took one each and the web demo gave up first)."""
    controller = Controller()
    first, first_url = _silent_worker()
    second, second_url = _silent_worker()
    with first, second:
        for url, name in ((first_url, "a"), (second_url, "b")):
            controller.register_worker(url, True, {**STATUS, "model_names": [name]})
        refresh = threading.Thread(target=controller.refresh_all_workers)
        refresh.start()
        a, _ = first.accept()
        second.settimeout(3)  # within the first one's 5-s time-out: asked while it is still unanswered
        b, _ = second.accept()
        a.close(), b.close()
        refresh.join(30)
    assert not refresh.is_alive() and controller.list_models() == []


def test_registering_a_slow_worker_does_not_hold_up_the_controller():
    controller = Controller()
    silent, silent_url = _silent_worker()
    with silent, ServerThread(create_app(controller)) as server:
        register = threading.Thread(target=requests.post, args=(server.url + "/register_worker",),
                                    kwargs={"json": {"worker_name": silent_url}, "timeout": 30})
        register.start()
        conn, _ = silent.accept()  # the controller now waits for the worker's status
        with conn:
            assert requests.post(server.url + "/list_models", timeout=2).json() == {"models": []}
            beat = requests.post(server.url + "/receive_heart_beat", json={"worker_name": silent_url}, timeout=2)
            assert beat.json() == {"exist": False}
        register.join(30)


def test_the_demo_takes_each_workers_own_template_and_asks_again_after_a_failure():
    """--conv-mode is for workers that report no template (upstream's); a worker's own wins. A worker
    that could not be asked is asked again for the next conversation, not given vicuna_v1 for good."""
    from fastapi import FastAPI, HTTPException

    from llava.serve.client import ControllerBackend

    up = {"chatml": True}

    def worker(models, conv_mode):
        app = FastAPI()

        @app.post("/worker_get_status")
        def status():
            if not up["chatml"] and conv_mode == "chatml":
                raise HTTPException(503)
            return {"model_names": models, "speed": 1, "queue_length": 0, "conv_mode": conv_mode}

        return app

    controller = Controller()
    with ServerThread(create_app(controller)) as server, ServerThread(worker(["smol"], "chatml")) as ours, \
            ServerThread(worker(["llava-v1.5"], None)) as upstream:
        controller.register_worker(ours.url, True, None)
        controller.register_worker(upstream.url, True, None)
        backend = ControllerBackend(server.url, conv_mode="llava_v1")
        assert backend.new_conversation("smol").version == "chatml"
        assert backend.new_conversation("llava-v1.5").version == "v1"
        fresh = ControllerBackend(server.url)
        up["chatml"] = False
        assert fresh.new_conversation("smol").version == "v1"  # the fallback, this once
        up["chatml"] = True
        conv = fresh.new_conversation("smol")
        assert conv.version == "chatml" and conv.stop_str == "<|im_end|>"


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
