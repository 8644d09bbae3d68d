"""The gradio demo, in-process and in controller mode: answers, specific errors, queueing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llava.serve.controller import Controller, create_app
from llava.serve.examples import example_images
from llava.serve.gradio_web_server import ControllerBackend, DemoApp, LocalBackend, launch
from tests.serve.conftest import DyingWorker, ServerThread, free_port

REPO = Path(__file__).resolve().parents[2]
STATS = "visual tokens: 4 (projector delta) · time to first token: "


@pytest.fixture(scope="module")
def demo(chat_model, tmp_path_factory):
    """The one-command demo (model in this process) on a free 127.0.0.1 port; 4 answers at a time."""
    examples_dir = tmp_path_factory.mktemp("examples")
    app = DemoApp(LocalBackend(chat_model), example_images(examples_dir, image_size=112))
    blocks = app.build()
    launch(blocks, port=free_port(), concurrency_count=4, allowed_paths=[str(examples_dir), str(app.upload_dir)],
           block=False, quiet=True)
    assert blocks.local_url.startswith("http://127.0.0.1:")
    yield blocks, app
    blocks.close()
    app.close()
    assert not app.upload_dir.exists()


def _ask(client: Client, model: str, text: str, image, max_tokens: int = 6):
    """One turn through the UI's own events: add_text, then the streaming bot. Returns (chat, notice)."""
    upload = handle_file(str(image)) if image is not None else None
    _, _, _, notice = client.predict(text, upload, "Default", model, api_name="/add_text")
    chat, bot_notice = client.predict(model, 0.0, 0.7, max_tokens, api_name="/bot")
    return chat, notice or (bot_notice if isinstance(bot_notice, str) else "")


def _last_text(chat) -> str:
    return chat[-1]["content"][-1]["text"]


def test_demo_answers_through_gradio_client(demo, chat_model, image_file):
    client = Client(demo[0].local_url, verbose=False)
    chat, notice = _ask(client, chat_model.model_name, "What is in the image?", image_file)
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert chat[0]["content"][0]["type"] == "file" and chat[0]["content"][1]["text"] == "What is in the image?"
    answer = _last_text(chat)
    assert STATS in answer and answer.split("\n\n")[0].strip()
    assert notice.startswith(STATS)
    # a follow-up turn is about the same image; regenerate replaces the last answer; clear empties the chat
    chat, _ = _ask(client, chat_model.model_name, "And its color?", None)
    assert len(chat) == 4 and STATS in _last_text(chat)
    client.predict("Default", api_name="/regenerate")
    chat, _ = client.predict(chat_model.model_name, 0.0, 0.7, 6, api_name="/bot")
    assert len(chat) == 4 and STATS in _last_text(chat)
    assert client.predict(api_name="/clear")[0] == []


def test_bad_input_gets_a_specific_message_and_the_app_keeps_working(demo, chat_model, image_file, tmp_path):
    client, model = Client(demo[0].local_url, verbose=False), chat_model.model_name
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image")
    chat, notice = _ask(client, model, "What is in the image?", notes)
    assert chat == [] and "The uploaded file is not an image (notes.txt)" in notice
    chat, notice = _ask(client, model, "   ", image_file)
    assert chat == [] and notice == "⚠ Empty message: type a question about the image"
    chat, notice = _ask(client, model, "word " * 600, image_file)
    assert "Prompt too long" in notice and "Prompt too long" in _last_text(chat) and "error_code: 1" in notice
    chat, notice = _ask(client, model, "What is in the image?", None)
    assert notice.startswith(STATS) and len(chat) == 2  # the failed turn's image was kept: 4 visual tokens
    chat, notice = _ask(client, model, "What about <image>?", None)
    assert "Number of images does not match number of <image> tokens in prompt: 2 tags, 1 image" in notice
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3000, 2000), "green").save(huge)
    chat, notice = _ask(client, model, "What is in the image?", huge)
    assert notice.startswith(STATS) and len(chat) == 2  # shrunk as upstream; a new image, a new conversation


def test_eight_concurrent_users_all_get_answers(demo, chat_model, image_file):
    url, model = demo[0].local_url, chat_model.model_name

    def user(i: int) -> str:
        chat, _ = _ask(Client(url, verbose=False), model, f"Question {i}: what is in the image?", image_file, 8)
        return _last_text(chat)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(user, range(8)))  # 8 users, 4 answered at a time: the rest queue
    assert all(STATS in a for a in answers)


def test_a_message_or_clear_while_an_answer_streams_keeps_the_conversation_whole(chat_model, image_file):
    """The textbox stays usable while an answer streams: a second question waits (named in a
    notice) instead of taking the rest of the first answer, and Clear stops the answer instead of
    being undone by its next chunk."""
    app = DemoApp(LocalBackend(chat_model))
    model = chat_model.model_name
    try:
        alone, *_ = app.add_text(None, "First question", str(image_file), "Default", model)
        list(app.bot(alone, model, 0.0, 0.7, 12))
        session, *_ = app.add_text(None, "First question", str(image_file), "Default", model)
        streaming = app.bot(session, model, 0.0, 0.7, 12)
        for _ in range(3):
            next(streaming)
        assert session.answering
        with pytest.warns(UserWarning, match="The answer is still coming"):  # gr.Warning outside a request
            kept, chat, text, _, notice = app.add_text(session, "Second question", None, "Default", model)
        assert "The answer is still coming" in notice and text is not None  # the typed text stays
        assert list(app.bot(kept, model, 0.0, 0.7, 6))[-1][2] is not None  # the chained bot leaves it alone
        *_, (session, chat, notice) = streaming
        assert not session.answering and notice.startswith(STATS)
        assert [role for role, _ in session.conv.messages] == [session.conv.roles[0], session.conv.roles[1]]
        assert session.conv.messages[1][1] == alone.conv.messages[1][1]  # the whole first answer, in its turn

        session, *_ = app.add_text(session, "Another question", None, "Default", model)
        streaming = app.bot(session, model, 0.0, 0.7, 12)
        next(streaming), next(streaming)
        cleared, chat, *_ = app.clear(session)
        assert cleared is session and chat == [] and session.conv is None
        rest = list(streaming)
        assert all(out[0].conv is None for out in rest) and not session.stats  # it stopped, nothing came back
        session, *_ = app.add_text(session, "New question", None, "Default", model)
        assert [m[1] for m in session.conv.messages] == ["New question", None]
    finally:
        app.close()


def test_every_way_to_get_an_answer_shares_one_concurrency_group(chat_model):
    """--concurrency-count bounds the answers generated at once, whichever button asked for them."""
    app = DemoApp(LocalBackend(chat_model))
    try:
        blocks = app.build()
        groups = {fn.concurrency_id for fn in blocks.fns.values() if fn.name == "bot"}
        assert len([fn for fn in blocks.fns.values() if fn.name == "bot"]) == 3 and groups == {"answer"}
    finally:
        app.close()


def test_controller_mode_uses_workers_and_reports_a_worker_dying_mid_answer(worker_server, chat_model, image_file):
    controller = Controller()
    with ServerThread(create_app(controller)) as server, DyingWorker() as dying:
        controller.register_worker(worker_server.url, True, None)
        app = DemoApp(ControllerBackend(server.url))
        assert app.models == [chat_model.model_name]
        session, _, _, _, notice = app.add_text(None, "What is in the image?", str(image_file), "Default",
                                                chat_model.model_name)
        assert session.conv.version == "v1" and notice == ""  # vicuna_v1, read from the worker's status
        *_, (session, chat, notice) = app.bot(session, chat_model.model_name, 0.0, 0.7, 6)
        assert notice.startswith(STATS) and STATS in chat[-1]["content"]

        controller.register_worker(dying.url, True, {"model_names": ["fragile"], "speed": 1, "queue_length": 0,
                                                     "conv_mode": "vicuna_v1"})
        session, *_ = app.add_text(None, "What is in the image?", str(image_file), "Default", "fragile")
        with pytest.warns(UserWarning, match="stopped mid-answer"):  # gr.Warning outside a request
            *_, (session, chat, notice) = app.bot(session, "fragile", 0.0, 0.7, 6)
        assert f"Worker {dying.url} for model fragile stopped mid-answer" in notice and "(error_code: 3)" in notice
        # the failed turn is kept out of the conversation: the next request to a live model works
        session, *_ = app.add_text(None, "What is in the image?", str(image_file), "Default", chat_model.model_name)
        *_, (session, chat, notice) = app.bot(session, chat_model.model_name, 0.0, 0.7, 6)
        assert notice.startswith(STATS)

    unreachable = DemoApp(ControllerBackend(f"http://127.0.0.1:{free_port()}"))
    assert unreachable.models == [] and "is unreachable" in unreachable.startup_error


def test_upstream_embed_and_moderate_flags(tmp_path, capsys):
    """--embed leaves out the heading; --moderate (OpenAI's API upstream) is refused by name."""
    from llava.serve.gradio_web_server import main

    app = DemoApp(ControllerBackend(f"http://127.0.0.1:{free_port()}"), upload_dir=str(tmp_path / "up"))
    try:
        def headers(blocks):
            return [c for c in blocks.config["components"] if c.get("props", {}).get("elem_id") == "header"]

        full, embedded = app.build(), app.build(embed=True)
        assert len(headers(full)) == 1 and "Delta-LLaVA" in headers(full)[0]["props"]["value"]
        assert headers(embedded) == []
        full.close()
        embedded.close()
    finally:
        app.close()
    with pytest.raises(SystemExit) as stop:
        main(["--moderate", "--port", str(free_port())])
    assert stop.value.code == 2 and "--moderate sends every question to OpenAI's moderation API" in capsys.readouterr().err


def test_upload_folder_is_removed_only_when_the_app_made_it(tmp_path):
    backend = ControllerBackend(f"http://127.0.0.1:{free_port()}")  # nothing listens: no models, no wait
    app = DemoApp(backend)
    assert app.upload_dir.is_dir() and app.upload_dir.name.startswith("llava_serve_uploads_")
    app._display_copy(Image.new("RGB", (32, 32), "red"))
    app.close()
    assert not app.upload_dir.exists()
    app.close()  # a second close is harmless

    # a process that ends without close() (the demo stopped with Ctrl-C) still removes it, at exit
    code = ("from llava.serve.gradio_web_server import ControllerBackend, DemoApp; "
            f"app = DemoApp(ControllerBackend('http://127.0.0.1:{free_port()}')); "
            "(app.upload_dir / 'kept.png').write_bytes(b'x'); print(app.upload_dir)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    left = Path(out.stdout.strip().splitlines()[-1])
    assert left.parent == tmp_path and not left.exists()

    kept = DemoApp(backend, upload_dir=str(tmp_path / "uploads"))
    kept._display_copy(Image.new("RGB", (32, 32), "blue"))
    kept.close()
    assert len(list((tmp_path / "uploads").glob("*.png"))) == 1


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_web_server_stops_on_sigterm_and_removes_its_uploads(tiny_checkpoint, tmp_path, when):
    """SIGTERM once the page is served, or as soon as the demo says it is starting (then the first
    answer of --preload-example is generated, or gradio starts): exit 0, no upload folder left."""
    port, log = free_port(), tmp_path / "demo.log"  # a file, not a pipe: nothing reads while it starts
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "llava.serve.gradio_web_server", "--model-path", tiny_checkpoint, "--device", "cpu",
             "--port", str(port), "--preload-example"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the demo exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the demo was not {when} after 120 s"
            uploads = list(tmp_path.glob("llava_serve_uploads_*"))
            if when == "starting" and "Starting the demo" in log.read_text():
                break
            if when == "serving":
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                        assert page.status == 200
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        assert len(uploads) == 1 and uploads[0].is_dir()
        server.send_signal(signal.SIGTERM)  # what `kill`, docker stop and systemd send
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, log.read_text()[-3000:]
    assert not uploads[0].exists()


def test_sigterm_inside_exec_during_start_up_still_exits_0(tmp_path):
    """A SIGTERM that lands while start-up runs code made by exec() (dataclasses, lazy imports do
    that) is a clean stop too: exit 0, not the SIGINT death CPython gives a KeyboardInterrupt that
    passed through exec(), and no upload folder left. Deterministic: the stand-in preload signals
    itself from inside exec()."""
    script = "\n".join([
        "import sys",
        "from llava.serve import gradio_web_server as web",
        "def preload(self, question=None):",
        "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGTERM)\\nfor _ in range(10**7): pass')",
        "    raise AssertionError('the SIGTERM did not stop the start-up')",
        "web.DemoApp.preload = preload",
        "web.main(sys.argv[1:])",
    ])
    done = subprocess.run(
        [sys.executable, "-c", script, "--controller-url", f"http://127.0.0.1:{free_port()}", "--preload-example",
         "--port", str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Stopped during start-up" in done.stderr
    assert not list(tmp_path.glob("llava_serve_uploads_*"))
