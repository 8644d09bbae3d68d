"""The web demo (gradio 6): upload an image, ask about it, watch the answer stream.

One command, nothing else to start (the model runs in this process)::

    python -m llava.serve.gradio_web_server --model-path CKPT --device cpu      # http://127.0.0.1:7860

Upstream's deployment (controller + model workers, several GPUs) also works::

    python -m llava.serve.gradio_web_server --controller-url http://localhost:21001

Each answer shows how many visual tokens the projector produced and the time to first token
(``delta`` gives 144 visual tokens per 336-px image where ``mlp2x_gelu`` gives 576). Bad input
(a file that is not an image, an empty message, a prompt longer than the context, a worker that
dies mid-answer) gets a message saying exactly that, in the chat and as a toast, and the app keeps
working. Requests beyond ``--concurrency-count`` wait in gradio's queue. The template comes from
the checkpoint's config (``conv_mode``; in controller mode, the worker's status) or
``--conv-mode``, never from the model's name. Binds 127.0.0.1 unless ``--host`` says otherwise.

``--preload-example`` starts the page with an example image already asked about and answered (for
screenshots and smoke tests).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # an offline demo makes no telemetry calls

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from llava.constants import DEFAULT_IMAGE_TOKEN  # noqa: E402
from llava.conversation import Conversation  # noqa: E402
from llava.serve.client import Chunk, ControllerBackend  # noqa: E402,F401 - ControllerBackend: --controller-url
from llava.serve.examples import default_examples_dir, example_images  # noqa: E402
from llava.serve.inference import (  # noqa: E402
    ChatModel,
    RequestError,
    open_image,
    stats_line,
)
from llava.utils import default_device, end_process  # noqa: E402

logger = logging.getLogger(__name__)

#: Upstream's hard cut-offs on one message (characters), with and without an image.
MAX_TEXT_WITH_IMAGE = 1200
MAX_TEXT = 1536
IMAGE_PROCESS_MODES = ["Crop", "Resize", "Pad", "Default"]
#: Longer side of the copy of an uploaded image shown in the chat.
DISPLAY_SIDE = 512
CSS = """
#buttons button { min-width: min(120px, 100%); }
#notice { min-height: 1.5em; }
"""


# ------------------------------------------------------------------------------ backends


class LocalBackend:
    """The model in this process (``--model-path``)."""

    def __init__(self, chat: ChatModel):
        self.chat = chat

    def describe(self) -> str:
        c = self.chat
        visual = f"{c.visual_tokens_per_image} visual tokens per image (projector `{c.projector_type}`)" \
            if c.is_multimodal else "text only"
        return f"`{c.model_name}` · template `{c.conv_mode}` · {visual} · context {c.context_len}"

    def list_models(self) -> list[str]:
        return [self.chat.model_name]

    def new_conversation(self, model_name: str) -> Conversation:
        return self.chat.new_conversation()

    def stream(self, model_name: str, conv: Conversation, temperature: float, top_p: float,
               max_new_tokens: int) -> Iterator[Chunk]:
        try:
            updates = self.chat.stream(conv.get_prompt(), conv.get_images(return_pil=True), temperature=temperature,
                                       top_p=top_p, max_new_tokens=max_new_tokens, stop=conv.stop_str)
            for update in updates:
                yield Chunk(update.text, visual_tokens=update.visual_tokens, projector=self.chat.projector_type,
                            time_to_first_token=update.time_to_first_token)
        except RequestError as err:
            yield Chunk(error=str(err), error_code=1)
        except Exception as err:  # noqa: BLE001 - the demo stays up and says what broke
            logger.exception("Generation failed")
            yield Chunk(error=f"Generation failed: {type(err).__name__}: {err}", error_code=1)


# ------------------------------------------------------------------------------ session state


@dataclasses.dataclass
class ChatSession:
    """Per-browser-tab state: the conversation plus what the chat shows beside it.

    Attributes:
        conv: the conversation sent to the model (None before the first message).
        model_name: the model ``conv`` was started for.
        image_paths: message index -> display copy of the image attached to that user turn.
        stats: message index -> "visual tokens: ... · time to first token: ..." of that answer.
        failed: a turn that got an error instead of an answer, ``(user message, error)``; it is
            kept out of ``conv`` (so the next request is unaffected) and shown until the next one.
        skip_next: the last add_text was rejected, so the bot does nothing.
        answering: an answer is streaming into the conversation; a new message waits for it.
    """

    conv: Conversation | None = None
    model_name: str | None = None
    image_paths: dict[int, str] = dataclasses.field(default_factory=dict)
    stats: dict[int, str] = dataclasses.field(default_factory=dict)
    failed: tuple[Any, str, str | None] | None = None
    skip_next: bool = False
    answering: bool = False

    def reset(self) -> None:
        """Empties the session in place, so an answer still streaming into it sees it was cleared."""
        self.__init__()


def _user_text(message: Any) -> str:
    text = message[0] if isinstance(message, tuple) else message
    return text.replace(DEFAULT_IMAGE_TOKEN, "").strip()


def to_chatbot(session: ChatSession | None) -> list[dict]:
    """The session as gr.Chatbot messages: an attached image first, then the text; stats after answers."""
    if session is None or session.conv is None:
        return []
    conv, messages = session.conv, []

    def user(message: Any, image_path: str | None) -> None:
        content: list = [{"path": image_path}] if image_path else []
        content.append(_user_text(message) or " ")
        messages.append({"role": "user", "content": content})

    for i in range(conv.offset, len(conv.messages)):
        _, message = conv.messages[i]
        if (i - conv.offset) % 2 == 0:
            user(message, session.image_paths.get(i))
        elif message is None:
            continue
        else:
            text = message or ("(the model ended its answer without any text)" if i in session.stats else "…")
            if i in session.stats:
                text += f"\n\n*{session.stats[i]}*"
            messages.append({"role": "assistant", "content": text})
    if session.failed is not None:
        message, error, image_path = session.failed
        user(message, image_path)
        messages.append({"role": "assistant", "content": f"⚠ {error}"})
    return messages


# ------------------------------------------------------------------------------ the app


class DemoApp:
    """The demo's event handlers over a backend; ``build()`` lays out the page.

    Args:
        backend: LocalBackend or ControllerBackend.
        examples: ``[(image path, question)]`` for gr.Examples.
        upload_dir: where display copies of uploaded images go (must be in launch's allowed_paths).
            Default: a new temporary folder, removed with the app (``close()``, or at exit).
        model_list_mode: "once" (list at start) or "reload" (on every page load), as upstream.
    """

    def __init__(self, backend, examples: list[tuple[str, str]] | None = None, upload_dir: str | None = None,
                 model_list_mode: str = "once"):
        if model_list_mode not in ("once", "reload"):
            raise ValueError(f"Unknown model list mode {model_list_mode!r}; known: ['once', 'reload']")
        self.backend = backend
        self.examples = examples or []
        if upload_dir is None:
            self.upload_dir = Path(tempfile.mkdtemp(prefix="llava_serve_uploads_"))
            # Our own folder goes when the app does; a folder the caller named is theirs to keep.
            self._remove_uploads = weakref.finalize(self, shutil.rmtree, self.upload_dir, ignore_errors=True)
        else:
            self.upload_dir = Path(upload_dir)
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            self._remove_uploads = None
        self.model_list_mode = model_list_mode
        self.models, self.startup_error = self._list_models()

    def close(self) -> None:
        """Removes the upload folder if the app created it (also done at exit)."""
        if self._remove_uploads is not None:
            self._remove_uploads()

    def _list_models(self) -> tuple[list[str], str]:
        try:
            return self.backend.list_models(), ""
        except RequestError as err:
            logger.warning("%s", err)
            return [], str(err)

    # -------------------------------------------------------------- helpers

    def _display_copy(self, image: Image.Image) -> str:
        """A small PNG copy of an uploaded image for the chat, named by its content."""
        digest = hashlib.md5(image.tobytes()).hexdigest()[:16]
        path = self.upload_dir / f"{digest}.png"
        if not path.is_file():
            thumb = image.copy()
            thumb.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
            tmp = path.with_suffix(".tmp.png")
            thumb.save(tmp)
            tmp.replace(path)
        return str(path)

    @staticmethod
    def _load_upload(payload: Any) -> Image.Image | None:
        """The image from gr.Image's raw payload (preprocess is off so a bad file gets our message)."""
        if payload is None:
            return None
        if isinstance(payload, Image.Image):
            return payload
        if isinstance(payload, str):
            payload = {"path": payload}
        name = payload.get("orig_name") or Path(payload.get("path") or "upload").name
        path, url = payload.get("path"), payload.get("url") or ""
        if path:
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                raise RequestError(f"The uploaded file {name} could not be read: {err}") from err
        elif url.startswith("data:") and "," in url:
            data = base64.b64decode(url.split(",", 1)[1])
        else:
            raise RequestError(f"The upload {name} has no file")
        return open_image(data, name=name)

    @staticmethod
    def _warn(message: str) -> str:
        gr.Warning(message)
        return f"⚠ {message}"

    # -------------------------------------------------------------- events

    def add_text(self, session: ChatSession | None, text: str | None, image_payload: Any, image_process_mode: str,
                 model_name: str | None):
        """Adds the user's turn. Returns (session, chatbot, textbox, imagebox, notice)."""
        session = session if session is not None else ChatSession()
        text = (text or "").strip()
        image_process_mode = image_process_mode if image_process_mode in IMAGE_PROCESS_MODES else "Default"
        if session.answering:  # the bot chained to this event must not touch the answer that streams
            return session, gr.skip(), gr.skip(), gr.skip(), self._warn(
                "The answer is still coming: send this when it is done (or press Clear)")
        session.skip_next = True
        if not model_name:
            notice = self._warn("No model to answer: " + (self.startup_error or "no worker has registered a model yet"))
            return session, to_chatbot(session), text, gr.skip(), notice
        try:
            image = self._load_upload(image_payload)
        except RequestError as err:
            return session, to_chatbot(session), text, None, self._warn(str(err))
        if not text:
            what = "type a question about the image" if image is not None else "type a message"
            return session, to_chatbot(session), "", gr.skip(), self._warn(f"Empty message: {what}")

        if session.failed is not None:
            failed_message = session.failed[0]
            session.failed = None
            if image is None and isinstance(failed_message, tuple):
                image, image_process_mode = failed_message[1], failed_message[2]  # keep the image of a failed turn
        if session.conv is None or session.model_name != model_name:
            try:
                session.conv = self.backend.new_conversation(model_name)
            except RequestError as err:
                return session, to_chatbot(session), text, gr.skip(), self._warn(str(err))
            session.model_name, session.image_paths, session.stats = model_name, {}, {}
        conv = session.conv
        if image is not None:
            text = text[:MAX_TEXT_WITH_IMAGE]
            if conv.get_images(return_pil=True):  # one image per conversation, as upstream
                session.conv = conv = self.backend.new_conversation(model_name)
                session.image_paths, session.stats = {}, {}
                gr.Info("A new image starts a new conversation")
            if DEFAULT_IMAGE_TOKEN not in text:
                text = text + "\n" + DEFAULT_IMAGE_TOKEN
            session.image_paths[len(conv.messages)] = self._display_copy(image)
            message: Any = (text, image, image_process_mode)
        else:
            message = text[:MAX_TEXT]
        conv.append_message(conv.roles[0], message)
        conv.append_message(conv.roles[1], None)
        session.skip_next = False
        return session, to_chatbot(session), "", None, ""

    def bot(self, session: ChatSession | None, model_name: str | None, temperature: float, top_p: float,
            max_new_tokens: float):
        """Streams the answer to the pending turn. Yields (session, chatbot, notice)."""
        if session is None or session.skip_next or session.answering or session.conv is None \
                or not session.conv.messages or session.conv.messages[-1][1] is not None:
            yield session, to_chatbot(session), gr.skip()
            return
        conv = session.conv
        index = len(conv.messages) - 1
        turn = conv.messages[index]  # the answer goes to this turn, whatever is added meanwhile
        session.stats.pop(index, None)
        turn[1] = ""
        session.answering = True
        yield session, to_chatbot(session), ""
        start, first, last = time.perf_counter(), None, Chunk()
        stream = self.backend.stream(session.model_name or model_name, conv, temperature, top_p, int(max_new_tokens))
        try:
            for chunk in stream:
                if session.conv is not conv:  # cleared, or another conversation started: stop answering
                    return
                if chunk.error is not None:
                    user_message = conv.messages[index - 1][1]
                    image_path = session.image_paths.pop(index - 1, None)
                    del conv.messages[index - 1:index + 1]  # never happened for the model; shown as failed
                    text = f"{chunk.error} (error_code: {chunk.error_code})"
                    session.failed = (user_message, text, image_path)
                    gr.Warning(chunk.error)
                    session.answering = False
                    yield session, to_chatbot(session), f"⚠ {text}"
                    return
                if chunk.text and first is None:
                    first = time.perf_counter() - start
                last = chunk
                turn[1] = chunk.text
                yield session, to_chatbot(session), gr.skip()
        finally:
            if session.conv is conv:
                session.answering = False
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stops the worker's generation when the answer was abandoned
        # The model's own time to first token when the backend reports it (upstream workers do not).
        ttft = last.time_to_first_token if last.time_to_first_token is not None else first
        session.stats[index] = stats_line(last.visual_tokens, last.projector, ttft)
        yield session, to_chatbot(session), session.stats[index]

    def regenerate(self, session: ChatSession | None, image_process_mode: str):
        """Drops the last answer (or the failed turn's error) so the bot answers again."""
        if session is None or session.conv is None:
            return session, to_chatbot(session), self._warn("Nothing to regenerate yet")
        if session.answering:
            session.skip_next = True
            return session, gr.skip(), self._warn("The answer is still coming: regenerate it when it is done")
        conv = session.conv
        if session.failed is not None:
            message, _, image_path = session.failed
            session.failed = None
            if image_path:
                session.image_paths[len(conv.messages)] = image_path
            conv.append_message(conv.roles[0], message)
            conv.append_message(conv.roles[1], None)
        elif len(conv.messages) >= conv.offset + 2 and conv.messages[-1][1] is not None:
            conv.messages[-1][-1] = None
            session.stats.pop(len(conv.messages) - 1, None)
        else:
            return session, to_chatbot(session), self._warn("Nothing to regenerate yet")
        previous = conv.messages[-2][1]
        if isinstance(previous, tuple) and image_process_mode in IMAGE_PROCESS_MODES:
            conv.messages[-2][1] = (previous[0], previous[1], image_process_mode)
        session.skip_next = False
        return session, to_chatbot(session), ""

    def clear(self, session: ChatSession | None = None):
        """A fresh conversation. Returns (session, chatbot, textbox, imagebox, notice).

        The session is emptied in place: an answer still streaming sees that and stops, instead of
        putting the old conversation back with its next chunk.
        """
        if session is None:
            session = ChatSession()
        session.reset()
        return session, [], "", None, ""

    def refresh_models(self):
        models, error = self._list_models()
        self.models, self.startup_error = models, error
        return gr.Dropdown(choices=models, value=models[0] if models else None), (f"⚠ {error}" if error else "")

    def preload(self, question: str | None = None, temperature: float = 0.0, max_new_tokens: int = 64) -> ChatSession:
        """A session whose first turn (the first example image and ``question``) is already answered."""
        if not self.examples or not self.models:
            raise ValueError("--preload-example needs example images and a model")
        image_path, default_question = self.examples[0]
        payload = {"path": image_path, "orig_name": Path(image_path).name}
        session, *_ = self.add_text(None, question or default_question, payload, "Default", self.models[0])
        for session, *_ in self.bot(session, self.models[0], temperature, 0.7, max_new_tokens):
            pass
        if session.failed is not None:
            raise RuntimeError(f"The preloaded example failed: {session.failed[1]}")
        return session

    def build(self, title: str = "Delta-LLaVA", preload_session: ChatSession | None = None,
              embed: bool = False) -> gr.Blocks:
        """Lays out the page and wires the events (API names: add_text, bot, regenerate, clear)."""
        with gr.Blocks(title=title) as demo:
            session = gr.State(value=preload_session or ChatSession())
            if not embed:  # --embed: for a page that has its own heading, as upstream's
                gr.Markdown(f"## {title}\n{self.backend.describe()}", elem_id="header")
            with gr.Row():
                with gr.Column(scale=3):
                    model_selector = gr.Dropdown(choices=self.models, value=self.models[0] if self.models else None,
                                                 interactive=len(self.models) > 1 or self.model_list_mode == "reload",
                                                 show_label=False, container=False)
                    imagebox = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=300)
                    image_process_mode = gr.Radio(IMAGE_PROCESS_MODES, value="Default",
                                                  label="Preprocess for non-square image")
                    textbox = gr.Textbox(show_label=False, placeholder="Ask about the image and press Enter",
                                         container=False, render=False)
                    if self.examples:
                        gr.Examples(examples=[[path, question] for path, question in self.examples],
                                    inputs=[imagebox, textbox], label="Examples")
                    with gr.Accordion("Parameters", open=False):
                        temperature = gr.Slider(0.0, 1.0, value=0.2, step=0.1, label="Temperature")
                        top_p = gr.Slider(0.0, 1.0, value=0.7, step=0.1, label="Top P")
                        max_output_tokens = gr.Slider(1, 1024, value=512, step=1, label="Max output tokens")
                with gr.Column(scale=8):
                    chatbot = gr.Chatbot(value=to_chatbot(preload_session), elem_id="chatbot",
                                         label="Delta-LLaVA chatbot", height=520, buttons=["copy"])
                    with gr.Row():
                        with gr.Column(scale=8):
                            textbox.render()
                        with gr.Column(scale=1, min_width=80):
                            submit_btn = gr.Button("Send", variant="primary")
                    notice = gr.Markdown(self.startup_error and f"⚠ {self.startup_error}", elem_id="notice")
                    with gr.Row(elem_id="buttons"):
                        regenerate_btn = gr.Button("Regenerate")
                        clear_btn = gr.Button("Clear")

            add_inputs = [session, textbox, imagebox, image_process_mode, model_selector]
            add_outputs = [session, chatbot, textbox, imagebox, notice]
            bot_inputs = [session, model_selector, temperature, top_p, max_output_tokens]
            bot_outputs = [session, chatbot, notice]
            # The three ways to get an answer share one concurrency group, so --concurrency-count
            # bounds the answers generated at once (gradio gives each listener its own group).
            answer = dict(concurrency_id="answer", concurrency_limit="default")
            for i, trigger in enumerate((submit_btn.click, textbox.submit)):
                trigger(self.add_text, add_inputs, add_outputs, preprocess=False, show_progress="hidden",
                        api_name="add_text" if i == 0 else None,
                        api_visibility="public" if i == 0 else "private").then(
                    self.bot, bot_inputs, bot_outputs, api_name="bot" if i == 0 else None,
                    api_visibility="public" if i == 0 else "private", **answer)
            regenerate_btn.click(self.regenerate, [session, image_process_mode], bot_outputs,
                                 api_name="regenerate").then(self.bot, bot_inputs, bot_outputs,
                                                             api_visibility="private", **answer)
            clear_btn.click(self.clear, [session], add_outputs, api_name="clear")
            if self.model_list_mode == "reload":
                demo.load(self.refresh_models, None, [model_selector, notice])
        return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, concurrency_count: int = 16,
           allowed_paths: list[str] | None = None, share: bool = False, block: bool = True, quiet: bool = False):
    """Queues (requests beyond ``concurrency_count`` wait) and serves the demo."""
    demo.queue(default_concurrency_limit=concurrency_count)
    return demo.launch(server_name=host, server_port=port, share=share, allowed_paths=allowed_paths or [],
                       prevent_thread_lock=not block, quiet=quiet, show_error=True, ssr_mode=False,
                       footer_links=["api"], theme=gr.themes.Default(), css=CSS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Delta-LLaVA web demo (gradio).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (upstream: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model-path", default=None, help="serve this checkpoint in-process (no controller)")
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--device", default=None, help="cuda, cpu, mps (default: cuda, else mps, else cpu)")
    parser.add_argument("--load-8bit", action="store_true")
    parser.add_argument("--load-4bit", action="store_true")
    parser.add_argument("--conv-mode", default=None, help="template (default: the checkpoint config's conv_mode)")
    parser.add_argument("--controller-url", default="http://localhost:21001",
                        help="used without --model-path: upstream's controller + workers")
    parser.add_argument("--concurrency-count", type=int, default=16, help="answers generated at once; more wait")
    parser.add_argument("--model-list-mode", choices=["once", "reload"], default="once")
    parser.add_argument("--examples-dir", default=None, help="where the example images are drawn")
    parser.add_argument("--preload-example", nargs="?", const="", default=None, metavar="QUESTION",
                        help="start with the first example image asked about and answered")
    parser.add_argument("--share", action="store_true", help="gradio share link (needs network)")
    parser.add_argument("--embed", action="store_true", help="leave out the heading (for embedding the page)")
    parser.add_argument("--moderate", action="store_true",
                        help="upstream's OpenAI moderation of questions: not available here (refused)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, stopping the demo as Ctrl-C does (gradio closes its server on KeyboardInterrupt).

    A subclass on purpose: when a plain KeyboardInterrupt passes through ``exec``/``eval`` of a
    string (dataclass and namedtuple creation, lazy imports), CPython marks it "unhandled" even
    if it is caught later, and the process then ends by SIGINT (exit -2) after a clean stop.
    CPython only marks the exact KeyboardInterrupt type, so a SIGTERM ends the demo with exit 0.
    """


def _stop_like_ctrl_c(signum, frame) -> None:
    """SIGTERM handler: gradio closes its server, then main removes the uploads."""
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.moderate:
        parser.error("--moderate sends every question to OpenAI's moderation API, which this demo does not "
                     "call (nothing leaves the machine); put a moderation service in front of the demo instead")
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # `kill`, docker/systemd stop: shut down cleanly
    app = demo = None
    try:
        if args.model_path:
            backend = LocalBackend(ChatModel.from_pretrained(args.model_path, args.model_base, args.model_name,
                                                             args.load_8bit, args.load_4bit,
                                                             device=args.device or default_device(),
                                                             conv_mode=args.conv_mode))
        else:
            backend = ControllerBackend(args.controller_url, conv_mode=args.conv_mode)
        examples_dir = Path(args.examples_dir) if args.examples_dir else default_examples_dir()
        app = DemoApp(backend, example_images(examples_dir), model_list_mode=args.model_list_mode)
        logger.info("Starting the demo (Ctrl-C or SIGTERM stops it)")
        preload = app.preload(args.preload_example or None) if args.preload_example is not None else None
        demo = app.build(preload_session=preload, embed=args.embed)
        launch(demo, args.host, args.port, args.concurrency_count, [str(examples_dir), str(app.upload_dir)],
               args.share)
    except KeyboardInterrupt:  # stopped during start-up, before gradio's own handler was in place
        logger.info("Stopped during start-up")
        if demo is not None:
            demo.close()
    finally:
        if app is not None:
            app.close()

if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
    end_process(0)  # stopped cleanly: skip the C++ teardown that could abort a generate thread (llava.utils)
