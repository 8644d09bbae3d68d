"""Prompt strings must match LLaVA-1.5's byte for byte: checkpoints were trained on them."""

from __future__ import annotations

import base64
from io import BytesIO

import pytest
from PIL import Image

from llava.conversation import (
    Conversation,
    SeparatorStyle,
    conv_templates,
    default_conversation,
    resolve_conv_mode,
)

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAVA_LLAMA_2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand "
                        "the visual content that the user provides, and assist the user with a "
                        "variety of tasks using natural language.")


def two_turns(name: str, first: object = "<image>\nWhat is this?") -> Conversation:
    """Template ``name`` with user / reply / user / (assistant to answer)."""
    conv = conv_templates[name].copy()
    conv.append_message(conv.roles[0], first)
    conv.append_message(conv.roles[1], "A cat.")
    conv.append_message(conv.roles[0], "What color is it?")
    conv.append_message(conv.roles[1], None)
    return conv


@pytest.mark.parametrize("name", ["default", "v1", "vicuna_v1"])
def test_vicuna_v1_prompt(name):
    expected = (VICUNA_SYSTEM + " USER: <image>\nWhat is this? ASSISTANT: A cat.</s>"
                "USER: What color is it? ASSISTANT:")
    assert two_turns(name).get_prompt() == expected


def test_vicuna_v1_fields():
    conv = conv_templates["vicuna_v1"]
    assert conv.system == VICUNA_SYSTEM
    assert conv.roles == ("USER", "ASSISTANT")
    assert (conv.sep_style, conv.sep, conv.sep2, conv.version) == (SeparatorStyle.TWO, " ", "</s>", "v1")
    assert conv.messages == [] and conv.offset == 0
    assert default_conversation is conv_templates["vicuna_v1"]


def test_llava_v1_keeps_upstream_human_wording():
    # Upstream's llava_v1 says "human" where vicuna_v1 says "user"; run_llava picks it for v1 names.
    expected = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions."
                " USER: <image>\nWhat is this? ASSISTANT: A cat.</s>USER: What color is it? ASSISTANT:")
    assert two_turns("llava_v1").get_prompt() == expected


def test_vicuna_v1_finished_reply_ends_with_eos_string():
    conv = two_turns("vicuna_v1")
    conv.messages[-1][1] = "Orange."
    assert conv.get_prompt().endswith("USER: What color is it? ASSISTANT: Orange.</s>")


def test_plain_prompt():
    conv = conv_templates["plain"].copy()
    assert (conv.system, conv.roles, conv.sep_style, conv.sep) == ("", ("", ""), SeparatorStyle.PLAIN, "\n")
    conv.append_message(conv.roles[0], "<image>\nWhat is this?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == "<image>\nWhat is this?\n"
    assert two_turns("plain").get_prompt() == "<image>\nWhat is this?\nA cat.\nWhat color is it?\n"


def test_llava_llama_2_prompt():
    expected = ("[INST] <<SYS>>\n" + LLAVA_LLAMA_2_SYSTEM + "\n<</SYS>>\n\n<image>\nWhat is this? [/INST]"
                " A cat. </s><s>[INST] What color is it? [/INST]")
    conv = two_turns("llava_llama_2")
    assert (conv.sep, conv.sep2, conv.roles) == ("<s>", "</s>", ("USER", "ASSISTANT"))
    assert conv.get_prompt() == expected


def test_mistral_instruct_prompt_has_no_system_block():
    expected = "[INST] <image>\nWhat is this? [/INST] A cat. </s>[INST] What color is it? [/INST]"
    conv = two_turns("mistral_instruct")
    assert (conv.system, conv.sep, conv.sep2) == ("", "", "</s>")
    assert conv.get_prompt() == expected


def test_llama_2_rejects_assistant_first():
    conv = conv_templates["llava_llama_2"].copy()
    conv.append_message(conv.roles[1], "hello")
    with pytest.raises(ValueError, match="user role"):
        conv.get_prompt()


def test_chatml_prompt():
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n"
                "<|im_start|>assistant\nA cat.<|im_end|>\n"
                "<|im_start|>user\nWhat color is it?<|im_end|>\n"
                "<|im_start|>assistant\n")
    conv = two_turns("chatml")
    assert conv.roles == ("user", "assistant")
    assert conv.get_prompt() == expected


def test_chatml_without_system():
    conv = conv_templates["chatml"].copy()
    conv.system = ""
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chatml_direct_and_mpt_prompts():
    assert two_turns("chatml_direct").get_prompt() == (
        "<|im_start|>system\nAnswer the questions.<|im_end|>"
        "<|im_start|>user\n<image>\nWhat is this?<|im_end|>"
        "<|im_start|>assistant\nA cat.<|im_end|>"
        "<|im_start|>user\nWhat color is it?<|im_end|><|im_start|>assistant\n")
    assert two_turns("mpt").get_prompt().startswith(
        "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
        "The assistant gives helpful and honest answers.<|im_end|><|im_start|>user\n")


def test_single_style_v0():
    conv = two_turns("llava_v0")
    assert conv.get_prompt() == (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions.###"
        "Human: <image>\nWhat is this?###Assistant: A cat.###Human: What color is it?###Assistant:")
    # vicuna_v0 carries two few-shot messages, hidden from the demo by offset=2.
    assert len(conv_templates["v0"].messages) == 2 and conv_templates["v0"].offset == 2


@pytest.mark.parametrize("name, stop", [
    ("vicuna_v1", "</s>"), ("v1", "</s>"), ("llava_v1", "</s>"), ("plain", "\n"),
    ("llava_llama_2", "</s>"), ("mistral_instruct", "</s>"), ("chatml", "<|im_end|>"),
    ("chatml_direct", "<|im_end|>"), ("mpt", "<|im_end|>"), ("llava_v0", "###"),
])
def test_stop_str(name, stop):
    assert conv_templates[name].stop_str == stop


def test_copy_is_independent():
    template = conv_templates["vicuna_v1"]
    conv = template.copy()
    conv.append_message(conv.roles[0], "hi")
    conv.messages[0][1] = "changed"
    other = template.copy()
    assert template.messages == [] and other.messages == []
    conv2 = conv.copy()
    conv2.messages[0][1] = "changed again"
    conv2.append_message(conv.roles[1], "reply")
    assert conv.messages == [["USER", "changed"]]
    assert conv2.messages[0] is not conv.messages[0]


def test_copy_of_few_shot_template_does_not_share_lists():
    template = conv_templates["v0"]
    before = [list(m) for m in template.messages]
    conv = template.copy()
    conv.messages[0][1] = "edited"
    assert template.messages == before


def test_all_templates_render():
    for name, template in conv_templates.items():
        conv = template.copy()
        conv.append_message(conv.roles[0], "<image>\nQ")
        conv.append_message(conv.roles[1], None)
        assert "Q" in conv.get_prompt(), name
        assert conv.stop_str, name


def _demo_image(size=(60, 30), color=(255, 0, 0)):
    return Image.new("RGB", size, color)


def test_demo_tuple_message_moves_image_tag_to_front():
    image = _demo_image()
    conv = two_turns("vicuna_v1", first=("What is this?\n<image>", image, "Default"))
    assert conv.get_prompt() == two_turns("vicuna_v1").get_prompt()
    # The stored message is untouched.
    assert conv.messages[0][1][0] == "What is this?\n<image>"


def test_mmtag_version_wraps_image():
    conv = two_turns("v1_mmtag", first=("<image>\nWhat is this?", _demo_image(), "Default"))
    assert " USER: <Image><image></Image> ASSISTANT: Received.</s>USER: What is this? ASSISTANT: A cat.</s>" \
        in conv.get_prompt()


def test_get_images_returns_pil_and_applies_mode():
    image = _demo_image((60, 30))
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], ("<image>\nQ", image, "Pad"))
    conv.append_message(conv.roles[1], "A")
    conv.append_message(conv.roles[0], ("<image>\nQ2", image, "Default"))
    conv.append_message(conv.roles[1], None)
    padded, plain = conv.get_images(return_pil=True)
    assert padded.size == (60, 60) and padded.getpixel((0, 0)) == (122, 116, 104)
    assert plain is image
    encoded = conv.get_images()  # upstream's default: base64 strings, JSON-ready for a worker request
    assert len(encoded) == 2 and all(isinstance(e, str) for e in encoded)
    assert Image.open(BytesIO(base64.b64decode(encoded[0]))).size == (60, 60)


def test_get_images_caps_size_and_rejects_unknown_mode():
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], ("Q", _demo_image((3000, 1000)), "Crop"))
    (image,) = conv.get_images(return_pil=True)
    assert image.size == (1344, 448)
    conv.messages[0][1] = ("Q", _demo_image(), "Stretch")
    with pytest.raises(ValueError, match="Stretch"):
        conv.get_images()


def test_get_images_caps_tall_near_square_and_thin_images_as_upstream():
    """Upstream's rule: the longer side at most 1344 and the shorter at most 672, the aspect ratio
    kept; a tall image stays tall, and a sliver keeps 1 px rather than 0 (which PIL refuses)."""
    for size, expected in [((1000, 3000), (448, 1344)), ((2000, 1800), (746, 672)), ((3000, 2), (1344, 1)),
                           ((2, 3000), (1, 1344))]:
        conv = conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], ("Q", _demo_image(size), "Default"))
        (image,) = conv.get_images(return_pil=True)
        assert image.size == expected, size


def test_dict_reduces_tuples_to_text():
    conv = two_turns("vicuna_v1", first=("<image>\nWhat is this?", _demo_image(), "Default"))
    d = conv.dict()
    assert d["messages"][0] == ["USER", "<image>\nWhat is this?"]
    assert d["messages"][-1] == ["ASSISTANT", None]
    assert (d["system"], d["sep"], d["sep2"], d["offset"]) == (VICUNA_SYSTEM, " ", "</s>", 0)


@pytest.mark.parametrize("name", sorted(conv_templates))
def test_empty_reply_renders_as_a_finished_turn(name):
    """A reply of "" (a model that stopped at once) keeps its separator: the next turn stays well formed."""
    def prompt(reply: str) -> str:
        conv = conv_templates[name].copy()
        for message in ("Hello?", reply, "And now?", None):
            conv.append_message(conv.roles[len(conv.messages) % 2], message)
        return conv.get_prompt()

    marker = "\N{SNOWMAN}"
    assert marker in prompt(marker)
    assert prompt("") == prompt(marker).replace(marker, "")


def test_empty_reply_in_vicuna_and_chatml_prompts():
    conv = conv_templates["vicuna_v1"].copy()
    for message in ("Hi", "", "Again", None):
        conv.append_message(conv.roles[len(conv.messages) % 2], message)
    assert conv.get_prompt().endswith("USER: Hi ASSISTANT: </s>USER: Again ASSISTANT:")
    conv = conv_templates["chatml"].copy()
    for message in ("Hi", "", "Again", None):
        conv.append_message(conv.roles[len(conv.messages) % 2], message)
    assert conv.get_prompt().endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
                                      "<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n")


class _Config:
    def __init__(self, conv_mode=None):
        self.conv_mode = conv_mode


@pytest.mark.parametrize("requested", [None, "", "auto"])
def test_conv_mode_auto_takes_the_config_then_vicuna_v1(requested, caplog):
    """One resolution for the eval scripts, the CLI, the demo and the worker: the flag, then the
    checkpoint's config, then LLaVA-1.5's template (logged); never the folder name."""
    assert resolve_conv_mode(_Config("chatml"), requested) == "chatml"
    with caplog.at_level("INFO", logger="llava.conversation"):
        assert resolve_conv_mode(_Config(), requested) == "vicuna_v1"
        assert resolve_conv_mode(_Config(""), requested) == "vicuna_v1"  # an empty conv_mode names none
        assert resolve_conv_mode(object(), requested) == "vicuna_v1"  # released LLaVA-1.5 configs
    assert "config.json has no conv_mode and none was given: using vicuna_v1" in caplog.text


def test_conv_mode_flag_wins_and_unknown_names_say_where_they_came_from():
    assert resolve_conv_mode(_Config("chatml"), "llava_v1") == "llava_v1"
    with pytest.raises(ValueError, match=r"Unknown conversation template 'vicuna' \(from --conv-mode\); known: \["):
        resolve_conv_mode(_Config("chatml"), "vicuna")
    with pytest.raises(ValueError, match=r"Unknown conversation template 'nope' \(from config.json conv_mode\)"):
        resolve_conv_mode(_Config("nope"))
