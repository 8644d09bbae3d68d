"""One streaming generation path shared by the CLI, the model worker and the in-process web demo.

:class:`ChatModel` loads a checkpoint with ``load_pretrained_model`` and answers a prompt (already
rendered by a conversation template, with one ``<image>`` tag per image) by running
``model.generate`` in a thread and reading its tokens back through transformers'
``TextIteratorStreamer``. Every bad input raises :class:`RequestError` with a message meant for
the person who sent it ("Prompt too long: 812 tokens, context is 512"); callers show that message
and keep serving.

Usage::

    chat = ChatModel.from_pretrained("checkpoints/llava-delta", device="cpu")
    conv = chat.new_conversation()
    conv.append_message(conv.roles[0], "<image>\\nWhat is shown?")
    conv.append_message(conv.roles[1], None)
    for update in chat.stream(conv.get_prompt(), [image], stop=conv.stop_str):
        print(update.text)                 # the answer so far
    print(update.visual_tokens, update.time_to_first_token)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests
import torch
from PIL import Image, UnidentifiedImageError
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, conv_templates, resolve_conv_mode
from llava.mm_utils import KeywordsStoppingCriteria, get_model_name_from_path, process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.utils import default_device

logger = logging.getLogger(__name__)

#: Upstream's worker caps every request at this many new tokens.
MAX_NEW_TOKENS_CAP = 1024
#: Images with more pixels are refused before decoding (PIL's own decompression-bomb limit).
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Upstream's transport limit (``Conversation.process_image``): longer side at most 1344 px.
MAX_IMAGE_SIDE = 1344


class RequestError(ValueError):
    """A request the model cannot answer as sent; the message is written for the user."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def count_image_tags(prompt: str) -> int:
    return prompt.count(DEFAULT_IMAGE_TOKEN)


def check_image_count(prompt: str, num_images: int) -> None:
    """Raises RequestError unless the prompt has exactly one ``<image>`` tag per image."""
    tags = count_image_tags(prompt)
    if tags != num_images:
        raise RequestError(
            f"Number of images does not match number of <image> tokens in prompt: "
            f"{_plural(tags, 'tag')}, {_plural(num_images, 'image')}")


def open_image(data: bytes | str | Path, name: str = "the uploaded file") -> Image.Image:
    """Decode an image file (bytes or a path) into an RGB PIL image, capped as upstream's demo does.

    Args:
        data: the file's bytes, or its path.
        name: how to call the file in error messages.
    Returns:
        An RGB image whose longer side is at most ``MAX_IMAGE_SIDE`` (larger ones are shrunk
        with upstream's ``Conversation.process_image`` rule).
    Raises:
        RequestError: not an image, a truncated image, or more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Image.DecompressionBombError as err:
        raise RequestError(f"Image too large: {err}") from err
    except UnidentifiedImageError as err:
        raise RequestError(f"The uploaded file is not an image ({name}): no image format recognises its "
                           f"contents") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(f"The uploaded file is not an image ({name}): {err}") from err
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(f"Image too large: {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels")
    try:
        image = image.convert("RGB")  # decodes the whole file: truncated data fails here
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(f"The uploaded file is not an image ({name}): {err}") from err
    if max(image.size) > MAX_IMAGE_SIDE:
        try:
            image = Conversation.process_image(image, "Default", max_len=MAX_IMAGE_SIDE)
        except (OSError, ValueError) as err:
            raise RequestError(f"Cannot resize the image ({name}, {width}x{height} pixels): {err}") from err
    return image


def load_image(source: str | Path | bytes, timeout: float = 30) -> Image.Image:
    """An image from a local path, an http(s) URL or a file's bytes (``--image-file`` of the CLI and
    ``run_llava``), decoded and capped by ``open_image``.

    Raises:
        RequestError: the file cannot be read, the URL cannot be downloaded, or it is not an image;
            the message names the file or URL.
    """
    if isinstance(source, bytes):
        return open_image(source)
    source = str(source)
    if source.startswith(("http://", "https://")):
        try:
            response = requests.get(source, timeout=timeout)
            response.raise_for_status()
        except requests.RequestException as err:
            raise RequestError(f"cannot download {source}: {err}") from err
        return open_image(response.content, name=source)
    try:
        data = Path(source).read_bytes()
    except OSError as err:
        raise RequestError(f"cannot read {source}: {err.strerror or err}") from err
    return open_image(data, name=source)


def decode_image(data: str | bytes, index: int = 0) -> Image.Image:
    """Decode one base64 image of a worker request (a ``data:image/...;base64,`` prefix is accepted)."""
    if isinstance(data, str):
        if data.startswith("data:") and "," in data:
            data = data.split(",", 1)[1]
        data = data.encode("ascii", errors="replace")
    if not isinstance(data, bytes):
        raise RequestError(f"Image {index} is not a base64 string but {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"The uploaded file is not an image (image {index} is not valid base64: {err})") from err
    return open_image(raw, name=f"image {index}")


def encode_image(image: Image.Image, image_format: str = "PNG") -> str:
    """Base64 of an encoded image file, the form upstream's clients send to workers."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode()


@dataclasses.dataclass(frozen=True)
class StreamUpdate:
    """The state of one answer while it streams.

    Attributes:
        text: the answer so far (the stop string removed).
        visual_tokens: visual tokens the projector produced for this prompt (all its images).
        prompt_tokens: prompt length the LLM sees, visual tokens included.
        time_to_first_token: seconds from the request (image preprocessing, prefill included) to the
            first generated token; None before it.
        finished: True on the last update.
    """

    text: str
    visual_tokens: int
    prompt_tokens: int
    time_to_first_token: float | None
    finished: bool = False


@dataclasses.dataclass
class PreparedPrompt:
    input_ids: torch.Tensor           # [1, T] with one IMAGE_TOKEN_INDEX per image
    images: torch.Tensor | list | None  # [n, 3, S, S] pixel values, or None
    image_sizes: list[tuple[int, int]]
    visual_tokens: int
    prompt_tokens: int                # T - n + visual_tokens


class _TimedStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that notes when the first generated token arrives (text may come later:
    the streamer holds back incomplete words)."""

    first_token_at: float | None = None

    def put(self, value) -> None:
        if self.first_token_at is None and not self.next_tokens_are_prompt:
            self.first_token_at = time.perf_counter()
        super().put(value)


class _Cancelled(StoppingCriteria):
    """Stops generation once ``event`` is set (client gone, or the stop string already seen)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _number(params: dict, key: str, default: float, kind=float) -> float:
    value = params.get(key, default)
    if value is None:
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise RequestError(f"{key} must be a number, got {value!r}") from None
    except OverflowError:  # int() of an infinite float (JSON's 1e400 or Infinity)
        raise RequestError(f"{key} must be a finite number, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise RequestError(f"{key} must be a finite number, got {value!r}")
    return number


def _join(thread: threading.Thread) -> None:
    """Waits for ``thread`` even through Ctrl-C / SIGTERM (raised again once it has ended): a
    process that exits while the generate thread is inside torch aborts ("terminate called
    without an active exception") instead of stopping cleanly."""
    interrupted = None
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt as err:
            interrupted = err
    if interrupted is not None:
        raise interrupted


def _stop_prefix_len(text: str, stop: str | None) -> int:
    """Length of the longest end of ``text`` that begins ``stop`` (0 if none): text that may yet
    turn out to be the stop string, so it is not shown until the next pieces decide."""
    for n in range(min(len(stop or "") - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


class ChatModel:
    """A loaded checkpoint plus its conversation template, answering one prompt at a time per call.

    Concurrent calls from several threads are fine (each has its own generate thread and cache);
    limiting how many run at once is the server's job (worker semaphore, gradio queue).

    Args:
        tokenizer, model, image_processor, context_len: what ``load_pretrained_model`` returns.
        model_name: the name clients ask for (controller ``/list_models``).
        conv_mode: template name; None reads the checkpoint config's ``conv_mode``.
    """

    def __init__(self, tokenizer, model, image_processor, context_len: int, model_name: str,
                 conv_mode: str | None = None):
        self.tokenizer = tokenizer
        self.model = model
        self.image_processor = image_processor
        self.model_name = model_name
        self.conv_mode = resolve_conv_mode(model.config, conv_mode)
        # Upstream's worker also bounds by the LLM's positions: a tiny or long-context model may
        # have fewer positions than the tokenizer's model_max_length.
        positions = getattr(model.config, "max_position_embeddings", None)
        self.context_len = min(context_len, positions) if positions else context_len

    @classmethod
    def from_pretrained(cls, model_path: str, model_base: str | None = None, model_name: str | None = None,
                        load_8bit: bool = False, load_4bit: bool = False, device: str | None = None,
                        conv_mode: str | None = None, use_flash_attn: bool = False) -> "ChatModel":
        """Loads a checkpoint with ``load_pretrained_model`` (what is loaded follows the files present)."""
        model_path = str(model_path).rstrip("/")
        name = model_name or get_model_name_from_path(model_path)
        device = device or default_device()
        start = time.time()
        tokenizer, model, image_processor, context_len = load_pretrained_model(
            model_path, model_base, name, load_8bit=load_8bit, load_4bit=load_4bit, device=device,
            use_flash_attn=use_flash_attn)
        chat = cls(tokenizer, model, image_processor, context_len, name, conv_mode)
        logger.info("Loaded %s on %s in %.1f s: template %s, %s visual tokens per image (projector %s), context %d",
                    model_path, device, time.time() - start, chat.conv_mode, chat.visual_tokens_per_image,
                    chat.projector_type, chat.context_len)
        return chat

    # ------------------------------------------------------------------ facts shown to users

    @property
    def is_multimodal(self) -> bool:
        return self.image_processor is not None and getattr(self.model, "get_vision_tower", lambda: None)() is not None

    @property
    def visual_tokens_per_image(self) -> int:
        """What the projector makes of one image (``model.num_image_tokens()``); 0 for a text-only LLM."""
        return self.model.num_image_tokens() if self.is_multimodal else 0

    @property
    def projector_type(self) -> str | None:
        return getattr(self.model.config, "mm_projector_type", None) if self.is_multimodal else None

    def new_conversation(self) -> Conversation:
        return conv_templates[self.conv_mode].copy()

    def status(self) -> dict:
        """Facts about this model for ``/worker_get_status`` (extra keys are ignored by upstream clients)."""
        return {"conv_mode": self.conv_mode, "visual_tokens_per_image": self.visual_tokens_per_image,
                "projector": self.projector_type, "context_length": self.context_len}

    # ------------------------------------------------------------------ generation

    def prepare(self, prompt: str, images: Sequence[Image.Image] = ()) -> PreparedPrompt:
        """Tokenizes the prompt and preprocesses its images, checking they fit the model.

        Raises:
            RequestError: tags/images mismatch, images for a text-only model, images the
                processor cannot take, or a prompt that leaves no room to answer within the context.
        """
        images = list(images)
        if images and not self.is_multimodal:
            raise RequestError(f"Model {self.model_name} takes no images (its config has no mm_vision_tower)")
        check_image_count(prompt, len(images))
        pixels, sizes = None, []
        if images:
            try:
                images = [img if img.mode == "RGB" else img.convert("RGB") for img in images]
                images = [Conversation.process_image(img, "Default", max_len=MAX_IMAGE_SIDE)
                          if max(img.size) > MAX_IMAGE_SIDE else img for img in images]
                pixels = process_images(images, self.image_processor, self.model.config)
            except (OSError, ValueError) as err:
                found = ", ".join(f"{w}x{h}" for w, h in (img.size for img in images))
                raise RequestError(f"Cannot preprocess the images (sizes {found}): {type(err).__name__}: "
                                   f"{err}") from err
            sizes = [img.size for img in images]
            tower = self.model.get_vision_tower()
            if isinstance(pixels, list):
                pixels = [p.to(device=tower.device, dtype=tower.dtype) for p in pixels]
            else:
                pixels = pixels.to(device=tower.device, dtype=tower.dtype)
            if getattr(self.model.config, "mm_use_im_start_end", False):
                prompt = prompt.replace(DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
        input_ids = tokenizer_image_token(prompt, self.tokenizer, return_tensors="pt").unsqueeze(0)
        visual = len(images) * self.visual_tokens_per_image
        total = input_ids.shape[1] - len(images) + visual
        if total >= self.context_len:
            raise RequestError(f"Prompt too long: {total} tokens ({visual} of them visual), context is "
                               f"{self.context_len}; start a new conversation or shorten the message")
        return PreparedPrompt(input_ids.to(self.model.device), pixels, sizes, visual, total)

    def stream(self, prompt: str, images: Sequence[Image.Image] = (), *, temperature: float = 0.2,
               top_p: float = 0.7, max_new_tokens: int = 512, stop: str | None = None,
               cancel: threading.Event | None = None) -> Iterator[StreamUpdate]:
        """Generates an answer to a rendered prompt, yielding it as it grows.

        Args:
            prompt: a conversation template's ``get_prompt()``, one ``<image>`` per image.
            images: PIL images, in tag order.
            temperature: 0 (or below 0.001) is greedy decoding.
            top_p: nucleus sampling mass (used when sampling).
            max_new_tokens: capped at 1024 (as upstream) and at what the context leaves.
            stop: stop string (``conv.stop_str``); removed from the answer.
            cancel: set it to stop generation early (the generator also stops when closed).
        Yields:
            StreamUpdate each time the answer grows; each one's text extends the previous one's
            (trailing spaces and a possible start of the stop string wait for the next piece). The
            last one has ``finished=True``.
        Raises:
            RequestError: bad input (see ``prepare``); any other exception from ``generate``
                is re-raised after the generate thread has ended.
        """
        start = time.perf_counter()
        params = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        temperature = _number(params, "temperature", 0.2)
        top_p = _number(params, "top_p", 0.7)
        max_new_tokens = int(_number(params, "max_new_tokens", 512, kind=int))
        if temperature < 0:
            raise RequestError(f"temperature must be >= 0, got {temperature}")
        if max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if stop is not None and not isinstance(stop, str):
            raise RequestError(f"stop must be a string, got {type(stop).__name__} {stop!r}")
        prepared = self.prepare(prompt, images)
        max_new_tokens = min(max_new_tokens, MAX_NEW_TOKENS_CAP, self.context_len - prepared.prompt_tokens)

        cancel = cancel or threading.Event()
        criteria = [_Cancelled(cancel)]
        if stop:
            criteria.append(KeywordsStoppingCriteria([stop], self.tokenizer, prepared.input_ids))
        streamer = _TimedStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        do_sample = temperature > 0.001
        sampling = dict(temperature=temperature, top_p=min(max(top_p, 0.01), 1.0)) if do_sample else {}
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        kwargs = dict(
            inputs=prepared.input_ids, attention_mask=torch.ones_like(prepared.input_ids),
            images=prepared.images, image_sizes=prepared.image_sizes or None, do_sample=do_sample,
            max_new_tokens=max_new_tokens, streamer=streamer, use_cache=True, pad_token_id=pad_id,
            stopping_criteria=StoppingCriteriaList(criteria), **sampling)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as err:  # noqa: BLE001 - handed to the reading thread below
                failure.append(err)
                streamer.end()  # unblocks the reader; generate did not get to end the stream

        thread = threading.Thread(target=run, name="llava-generate", daemon=True)
        text = shown = ""

        def first_token() -> float | None:
            return None if streamer.first_token_at is None else streamer.first_token_at - start

        try:
            thread.start()  # inside the try: an interrupt right after it must still stop and join the thread
            for piece in streamer:
                if not piece:
                    continue
                text += piece
                if stop and stop in text:
                    text = text[: text.index(stop)]
                    cancel.set()
                    break
                # Upstream streams the raw text, so an update could end in "</" that the next one removes.
                visible = text[: len(text) - _stop_prefix_len(text, stop)].strip()
                if visible != shown:
                    shown = visible
                    yield StreamUpdate(shown, prepared.visual_tokens, prepared.prompt_tokens, first_token())
        finally:
            cancel.set()  # no-op after a normal end; stops generation when the reader went away
            _join(thread)  # the streamer's queue is unbounded, so generate never waits for us
        if failure:
            raise failure[0]
        yield StreamUpdate(text.strip(), prepared.visual_tokens, prepared.prompt_tokens, first_token(), finished=True)

    def generate_text(self, prompt: str, images: Sequence[Image.Image] = (), **kwargs) -> StreamUpdate:
        """The finished answer (the last update of ``stream``)."""
        update = None
        for update in self.stream(prompt, images, **kwargs):
            pass
        return update

    def worker_stream(self, params: dict, cancel: threading.Event | None = None) -> Iterator[dict]:
        """Upstream's ``/worker_generate_stream`` semantics over ``stream``.

        Args:
            params: ``{"prompt", "images" (base64 list), "temperature", "top_p", "max_new_tokens",
                "stop"}``; "model" and unknown keys are ignored.
        Yields:
            ``{"text": prompt + answer so far, "error_code": 0, ...}`` chunks as upstream (plus
            ``visual_tokens``, ``projector``, ``time_to_first_token``), or one
            ``{"text": <what went wrong>, "error_code": 1}`` chunk.
        """
        try:
            prompt = params.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise RequestError("The request has no prompt (expected a non-empty string in 'prompt')")
            raw_images = params.get("images") or []
            if not isinstance(raw_images, list):
                got = "one string" if isinstance(raw_images, str) else f"a {type(raw_images).__name__}"
                raise RequestError(f"'images' must be a list of base64-encoded image files, got {got}")
            check_image_count(prompt, len(raw_images))
            images = [decode_image(data, i) for i, data in enumerate(raw_images)]
            updates = self.stream(prompt, images, temperature=params.get("temperature", 1.0),
                                  top_p=params.get("top_p", 1.0), max_new_tokens=params.get("max_new_tokens", 256),
                                  stop=params.get("stop") or None, cancel=cancel)
            for update in updates:
                yield {"text": prompt + update.text, "error_code": 0, "visual_tokens": update.visual_tokens,
                       "projector": self.projector_type, "time_to_first_token": update.time_to_first_token}
        except RequestError as err:
            yield {"text": str(err), "error_code": 1}
        except Exception as err:  # noqa: BLE001 - the server stays up and says what broke
            logger.exception("Generation failed")
            yield {"text": f"Generation failed on the worker: {type(err).__name__}: {err}", "error_code": 1}


def stats_line(visual_tokens: int | None, projector: str | None, time_to_first_token: float | None) -> str:
    """``visual tokens: 144 (projector delta) · time to first token: 0.42 s``, shown after each answer."""
    visual = "n/a" if visual_tokens is None else str(visual_tokens)
    if projector:
        visual += f" (projector {projector})"
    ttft = "n/a" if time_to_first_token is None else f"{time_to_first_token:.2f} s"
    return f"visual tokens: {visual} · time to first token: {ttft}"
