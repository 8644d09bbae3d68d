"""Conversation templates: how a chat is rendered into the prompt string the LLM sees.

The template names, system prompts, roles and separators are LLaVA-1.5's (v1.2.x): models
trained with one of them must be prompted with exactly the same string, so none of these
strings may change. ``chatml`` is new here (SmolLM2 / Qwen2-style chat models).

Usage::

    conv = conv_templates["vicuna_v1"].copy()       # always copy: templates are shared
    conv.append_message(conv.roles[0], "<image>\\nWhat is shown?")
    conv.append_message(conv.roles[1], None)       # None = "the model answers next"
    prompt = conv.get_prompt()
    stop = conv.stop_str                           # pass to KeywordsStoppingCriteria

A message is either text or, in the web demo, upstream's tuple ``(text, PIL image,
image_process_mode)``; prompts use only the text, ``get_images`` returns the images.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from enum import Enum, auto
from io import BytesIO
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN

logger = logging.getLogger(__name__)

CHATML_START = "<|im_start|>"
CHATML_END = "<|im_end|>"

# Background used by the web demo's "Pad" mode (upstream's value, kept for identical images).
DEMO_PAD_COLOR = (122, 116, 104)


class SeparatorStyle(Enum):
    """How turns are joined into one prompt string.

    SINGLE:  ``{system}{sep}{role}: {msg}{sep}{role}: {msg}{sep}...``
    TWO:     like SINGLE, but user turns end with ``sep`` and assistant turns with ``sep2``
             (vicuna v1: ``" "`` and ``"</s>"``).
    MPT:     ``{system}{sep}{role}{msg}{sep}...``; roles carry their own markup.
    PLAIN:   ``{system}{msg}{sep}{msg}{sep2}...`` without roles (LLaVA pretraining).
    LLAMA_2: ``[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{msg} [/INST] {reply} </s><s>[INST] ...``.
    CHATML:  ``<|im_start|>{role}\\n{msg}<|im_end|>\\n`` per turn, the system as the first turn.
    """

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()
    CHATML = auto()


def _message_text(message: Any) -> str:
    """The text of a message: a string, or the first item of a demo ``(text, image, mode)``."""
    if isinstance(message, tuple):
        return message[0]
    return message


@dataclasses.dataclass
class Conversation:
    """A chat history plus the template that renders it (upstream LLaVA's class).

    Attributes:
        system: system prompt ("" for none).
        roles: (user role, assistant role) names as they appear in the prompt.
        messages: list of ``[role, message]``; ``message`` is a str, a demo tuple
            ``(text, PIL.Image, image_process_mode)``, or None for "the assistant answers next".
        offset: number of leading few-shot messages the demo does not display.
        sep_style: a SeparatorStyle.
        sep, sep2: separators; their meaning depends on ``sep_style``.
        version: template family ("v1", "llama_v2", "plain", "chatml", ...); a version
            containing "mmtag" wraps the image as ``<Image><image></Image>``.
        skip_next: used by the web demo to skip a generation round.
    """

    system: str
    roles: tuple[str, str]
    messages: list[list[Any]] = dataclasses.field(default_factory=list)
    offset: int = 0
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"

    skip_next: bool = False

    def __post_init__(self) -> None:
        # Templates are written with tuples (as upstream's are); keep lists internally so
        # append_message and in-place edits work on any instance.
        self.roles = tuple(self.roles)
        self.messages = [[role, message] for role, message in self.messages]

    # ------------------------------------------------------------------ prompt rendering

    def _prompt_messages(self) -> list[tuple[str, Any]]:
        """Messages as rendered: a demo image in the first turn becomes a leading ``<image>``."""
        messages = [(role, message) for role, message in self.messages]
        if messages and isinstance(messages[0][1], tuple):
            role, first = messages[0]
            text = _message_text(first).replace(DEFAULT_IMAGE_TOKEN, "").strip()
            if "mmtag" in self.version:
                messages[0] = (role, text)
                messages.insert(0, (self.roles[0], "<Image><image></Image>"))
                messages.insert(1, (self.roles[1], "Received."))
            else:
                messages[0] = (role, DEFAULT_IMAGE_TOKEN + "\n" + text)
        return messages

    def get_prompt(self) -> str:
        """Render the conversation into the exact prompt string the model was trained on.

        A trailing message of None (the assistant's turn to answer) renders as the bare
        assistant role, so the model continues from there. An empty reply ("", a model that
        stopped at once) renders as a finished turn with its separator, so the next turn's
        prompt stays well formed (upstream treats it as None and runs the two turns together).

        Returns:
            The prompt string.
        """
        messages = self._prompt_messages()
        style = self.sep_style
        if style == SeparatorStyle.SINGLE:
            ret = self.system + self.sep
            for role, message in messages:
                if message is not None:
                    ret += f"{role}: {_message_text(message)}{self.sep}"
                else:
                    ret += f"{role}:"
        elif style == SeparatorStyle.TWO:
            seps = (self.sep, self.sep2)
            ret = self.system + seps[0]
            for i, (role, message) in enumerate(messages):
                if message is not None:
                    ret += f"{role}: {_message_text(message)}{seps[i % 2]}"
                else:
                    ret += f"{role}:"
        elif style == SeparatorStyle.MPT:
            ret = self.system + self.sep
            for role, message in messages:
                if message is not None:
                    ret += role + _message_text(message) + self.sep
                else:
                    ret += role
        elif style == SeparatorStyle.LLAMA_2:
            ret = self._llama_2_prompt(messages)
        elif style == SeparatorStyle.PLAIN:
            # Upstream's plain template has sep2=None and would crash on a reply; we fall
            # back to sep, which is what LLaVA pretraining appends after a caption.
            seps = (self.sep, self.sep if self.sep2 is None else self.sep2)
            ret = self.system
            for i, (_, message) in enumerate(messages):
                if message is not None:
                    ret += _message_text(message) + seps[i % 2]
        elif style == SeparatorStyle.CHATML:
            ret = f"{CHATML_START}system\n{self.system}{self.sep}\n" if self.system else ""
            for role, message in messages:
                if message is not None:
                    ret += f"{CHATML_START}{role}\n{_message_text(message)}{self.sep}\n"
                else:
                    ret += f"{CHATML_START}{role}\n"
        else:
            raise ValueError(f"Invalid sep_style: {style!r}")
        return ret

    def _llama_2_prompt(self, messages: list[tuple[str, Any]]) -> str:
        if not messages or not messages[0][1]:
            raise ValueError("LLAMA_2 prompts need a non-empty first message")
        if messages[0][0] != self.roles[0]:
            raise ValueError(
                f"LLAMA_2 prompts must start with the user role {self.roles[0]!r}, "
                f"got {messages[0][0]!r}"
            )
        ret = ""
        for i, (_, message) in enumerate(messages):
            if message is None:
                continue
            text = _message_text(message)
            if i == 0 and self.system:
                text = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{text}"
            if i % 2 == 0:
                ret += f"{self.sep}[INST] {text} [/INST]"
            else:
                ret += f" {text} {self.sep2}"
        # The tokenizer adds the first BOS itself, so the leading sep ("<s>") is dropped.
        return ret[len(self.sep):] if self.sep and ret.startswith(self.sep) else ret

    @property
    def stop_str(self) -> str:
        """The string that ends an assistant reply, for ``KeywordsStoppingCriteria``.

        Upstream's scripts use ``sep2`` for TWO and ``sep`` otherwise; for LLAMA_2 that is
        "<s>" (or "" for mistral_instruct, which stops at once), so we use ``sep2`` there.
        """
        if self.sep_style in (SeparatorStyle.TWO, SeparatorStyle.LLAMA_2):
            return self.sep2
        if self.sep_style == SeparatorStyle.CHATML:
            return CHATML_END
        return self.sep

    # ------------------------------------------------------------------ history editing

    def append_message(self, role: str, message: Any) -> None:
        """Append ``[role, message]``; ``message`` None marks the turn the model will fill."""
        self.messages.append([role, message])

    def copy(self) -> "Conversation":
        """An independent copy: new message lists; strings and images are shared (immutable)."""
        return dataclasses.replace(self, messages=[[r, m] for r, m in self.messages])

    # ------------------------------------------------------------------ web demo helpers

    @staticmethod
    def process_image(image, image_process_mode: str, return_pil: bool = True,
                      image_format: str = "PNG", max_len: int = 1344, min_len: int = 672):
        """Apply the demo's image mode and cap the size for transport.

        Args:
            image: a PIL image.
            image_process_mode: "Pad" (square, grey fill), "Resize" (336 x 336),
                "Crop" or "Default" (unchanged).
            return_pil: return a PIL image; otherwise a base64 string of the encoded image.
            image_format: encoding for the base64 string.
            max_len, min_len: an image whose longer side exceeds ``max_len`` is shrunk so its
                longer side is at most ``max_len`` and its shorter side at most ``min_len``.

        Returns:
            A PIL image or a base64 string.
        """
        from llava.mm_utils import expand2square

        if image_process_mode == "Pad":
            image = expand2square(image, DEMO_PAD_COLOR)
        elif image_process_mode == "Resize":
            image = image.resize((336, 336))
        elif image_process_mode not in ("Default", "Crop"):
            raise ValueError(
                f"Invalid image_process_mode {image_process_mode!r}; "
                "known: ['Crop', 'Default', 'Pad', 'Resize']"
            )
        width, height = image.size
        if max(width, height) > max_len:
            aspect = max(width, height) / min(width, height)
            # Differs from upstream: at least 1 px short (a 3000x2 image rounded to 0 and crashed PIL)
            # and at most max_len long (1 px times the aspect could exceed it).
            short = max(1, int(min(max_len / aspect, min_len, min(width, height))))
            long = min(max_len, int(short * aspect))
            image = image.resize((long, short) if width >= height else (short, long))
        if return_pil:
            return image
        buffer = BytesIO()
        image.save(buffer, format=image_format)
        return base64.b64encode(buffer.getvalue()).decode()

    def get_images(self, return_pil: bool = False) -> list:
        """Images attached to user turns (demo tuples), after their image_process_mode.

        As upstream: base64 PNG strings by default (what a worker request carries), PIL images
        with ``return_pil=True``.

        Returns:
            A list of PIL images (or base64 strings), in conversation order.
        """
        images = []
        for i, (_, message) in enumerate(self.messages[self.offset:]):
            if i % 2 == 0 and isinstance(message, tuple):
                _, image, mode = message
                images.append(self.process_image(image, mode, return_pil=return_pil))
        return images

    def dict(self) -> dict:
        """A JSON-serialisable view (the demo logs it): demo tuples reduced to their text."""
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[role, _message_text(message)] for role, message in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }


# ---------------------------------------------------------------------------- templates
# The strings below are LLaVA-1.5's and must stay byte-identical.

conv_vicuna_v0 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("Human", "Assistant"),
    messages=(
        ("Human", "What are the key differences between renewable and non-renewable energy sources?"),
        ("Assistant",
         "Renewable energy sources are those that can be replenished naturally in a relatively "
         "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
         "Non-renewable energy sources, on the other hand, are finite and will eventually be "
         "depleted, such as coal, oil, and natural gas. Here are some key differences between "
         "renewable and non-renewable energy sources:\n"
         "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
         "energy sources are finite and will eventually run out.\n"
         "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
         "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
         "and other negative effects.\n"
         "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
         "have lower operational costs than non-renewable sources.\n"
         "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
         "locations than non-renewable sources.\n"
         "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
         "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
         "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
         "non-renewable sources are not, and their depletion can lead to economic and social instability.\n"),
    ),
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_vicuna_v1 = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llama_2 = Conversation(
    system="You are a helpful, respectful and honest assistant. Always answer as helpfully as "
    "possible, while being safe.  Your answers should not include any harmful, unethical, "
    "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
    "are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead "
    "of answering something not correct. If you don't know the answer to a question, please "
    "don't share false information.",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_llava_llama_2 = Conversation(
    system="You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language.",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_mistral_instruct = Conversation(
    system="",
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    sep_style=SeparatorStyle.LLAMA_2,
    sep="",
    sep2="</s>",
)

conv_chatml_direct = Conversation(
    system="<|im_start|>system\nAnswer the questions.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_mpt = Conversation(
    system="<|im_start|>system\n"
    "A conversation between a user and an LLM-based AI assistant. "
    "The assistant gives helpful and honest answers.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
    version="plain",
)

conv_llava_v0 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("Human", "Assistant"),
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_llava_v0_mmtag = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, and "
    "assist the user with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>.",
    roles=("Human", "Assistant"),
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    version="v0_mmtag",
)

conv_llava_v1 = Conversation(
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    roles=("USER", "ASSISTANT"),
    version="v1",
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_v1_mmtag = Conversation(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, and "
    "assist the user with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>.",
    roles=("USER", "ASSISTANT"),
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
    version="v1_mmtag",
)

# New: ChatML for SmolLM2 / Qwen2-style LLMs; "<|im_end|>" ends every turn.
conv_chatml = Conversation(
    system="You are a helpful assistant.",
    roles=("user", "assistant"),
    version="chatml",
    sep_style=SeparatorStyle.CHATML,
    sep=CHATML_END,
)

# Differs from upstream on purpose: upstream maps "default" to vicuna_v0 (a "###" template
# no LLaVA-1.5 checkpoint uses); here it is vicuna_v1, the LLaVA-1.5 template.
default_conversation = conv_vicuna_v1

conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v1,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
    "chatml": conv_chatml,
}

# The template for a checkpoint whose config names none (released LLaVA-1.5 checkpoints).
FALLBACK_CONV_MODE = "vicuna_v1"
# Values of --conv-mode that mean "the checkpoint's own template".
AUTO_CONV_MODES = (None, "", "auto")


def check_conv_mode(name: str, source: str = "--conv-mode") -> str:
    """``name`` if it is a template in :data:`conv_templates`.

    Raises:
        ValueError: it is not; names ``source`` (where the name came from) and the known templates.
    """
    if name not in conv_templates:
        raise ValueError(f"Unknown conversation template {name!r} (from {source}); known: {sorted(conv_templates)}")
    return name


def resolve_conv_mode(config: Any, requested: str | None = None) -> str:
    """The template to prompt a checkpoint with: ``requested`` (``--conv-mode``) unless it is one of
    :data:`AUTO_CONV_MODES`, else the config's ``conv_mode``, else LLaVA-1.5's ``vicuna_v1``.

    Differs from upstream on purpose: upstream guesses the template (and switches plain models to
    ``*_mmtag``) from substrings of the folder name; here the name decides nothing.

    Raises:
        ValueError: the template is unknown (see :func:`check_conv_mode`).
    """
    if requested not in AUTO_CONV_MODES:
        return check_conv_mode(requested)
    configured = getattr(config, "conv_mode", None)
    if configured:
        return check_conv_mode(configured, "config.json conv_mode")
    logger.info("config.json has no conv_mode and none was given: using %s (LLaVA-1.5's template)",
                FALLBACK_CONV_MODE)
    return FALLBACK_CONV_MODE
