"""The demo's per-tab session across a failed answer and a regenerate: what the model will be sent next."""

from __future__ import annotations

import pytest

from llava.serve.controller import Controller, create_app
from llava.serve.gradio_web_server import ControllerBackend, DemoApp, LocalBackend
from tests.serve.conftest import DyingWorker, ServerThread

FRAGILE = {"model_names": ["fragile"], "speed": 1, "queue_length": 0, "conv_mode": "vicuna_v1"}


@pytest.fixture()
def fragile_app():
    """A demo in controller mode whose only model's worker dies mid-answer."""
    controller = Controller()
    with ServerThread(create_app(controller)) as server, DyingWorker() as dying:
        app = DemoApp(ControllerBackend(server.url))
        # registered after the app has listed the models: a refresh would drop this worker, whose
        # status endpoint is as broken as the rest of it
        controller.register_worker(dying.url, True, FRAGILE)
        try:
            yield app
        finally:
            app.close()


def _answer(app, session, model):
    with pytest.warns(UserWarning, match="stopped mid-answer"):  # gr.Warning outside a request
        *_, (session, _, notice) = app.bot(session, model, 0.0, 0.7, 6)
    return session, notice


def test_a_failed_text_turn_leaves_the_conversation_as_before(fragile_app):
    session, *_ = fragile_app.add_text(None, "Hello there", None, "Default", "fragile")
    assert [m[1] for m in session.conv.messages] == ["Hello there", None]
    session, notice = _answer(fragile_app, session, "fragile")
    assert "(error_code: 3)" in notice
    assert session.conv.messages == []  # neither the question nor the answer happened for the model
    assert session.failed[0] == "Hello there" and not session.answering
    session, *_ = fragile_app.add_text(session, "Second try", None, "Default", "fragile")
    assert [(m[0], m[1]) for m in session.conv.messages] == [("USER", "Second try"), ("ASSISTANT", None)]
    assert session.failed is None


def test_regenerate_after_a_failed_image_turn_uses_the_new_image_mode(fragile_app, image_file):
    session, *_ = fragile_app.add_text(None, "What is in the image?", str(image_file), "Default", "fragile")
    session, _ = _answer(fragile_app, session, "fragile")
    assert session.conv.messages == []
    session, _, notice = fragile_app.regenerate(session, "Pad")
    assert notice == "" and len(session.conv.messages) == 2
    text, image, mode = session.conv.messages[-2][1]
    assert text == "What is in the image?\n<image>" and mode == "Pad" and image.size == (64, 48)
    assert session.conv.messages[-1][1] is None and session.failed is None
    assert 0 in session.image_paths  # the failed turn's picture is shown again with it


def test_regenerate_drops_the_answer_and_its_stats_and_takes_the_new_image_mode(chat_model, image_file):
    app = DemoApp(LocalBackend(chat_model))
    try:
        model = chat_model.model_name
        session, *_ = app.add_text(None, "What is in the image?", str(image_file), "Default", model)
        *_, (session, _, notice) = app.bot(session, model, 0.0, 0.7, 4)
        assert session.stats[1] == notice and session.conv.messages[1][1]
        session, _, notice = app.regenerate(session, "Pad")
        assert notice == ""
        assert 1 not in session.stats
        assert session.conv.messages[-1][1] is None
        assert session.conv.messages[-2][1][2] == "Pad"
        *_, (session, _, notice) = app.bot(session, model, 0.0, 0.7, 4)
        assert session.stats == {1: notice} and session.conv.messages[1][1]
        # an unknown mode leaves the turn's own
        session, *_ = app.regenerate(session, "Sideways")
        assert session.conv.messages[-2][1][2] == "Pad"
    finally:
        app.close()
