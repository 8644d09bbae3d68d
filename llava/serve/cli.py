"""Chat with a checkpoint in the terminal, about one image, with the answer streamed as it is generated.

    python -m llava.serve.cli --model-path CKPT --image-file photo.jpg --device cpu

Type a message and press Enter; an empty line or end of input (Ctrl-D) ends the chat. As upstream,
the image is attached to the first message and the conversation continues about it. The template
comes from the checkpoint's config (``conv_mode``) or ``--conv-mode``, never from the folder name.
After each answer a line on stderr gives the visual tokens the projector produced and the time to
first token.
"""

from __future__ import annotations

import argparse
import logging
import sys

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.serve.inference import ChatModel, RequestError, load_image, stats_line
from llava.utils import default_device


def _role_label(role: str) -> str:
    """A readable role name: ChatML/MPT roles carry their markup ("<|im_start|>user\\n")."""
    return role.replace("<|im_start|>", "").strip() or "USER"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Chat with a LLaVA checkpoint about an image.")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--image-file", default=None,
                        help="image file or http(s) URL to talk about (omit for a text-only chat)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu, mps (default: cuda, else mps, else cpu)")
    parser.add_argument("--conv-mode", default=None, help="template (default: the checkpoint config's conv_mode)")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--top-p", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--load-8bit", action="store_true")
    parser.add_argument("--load-4bit", action="store_true")
    parser.add_argument("--debug", action="store_true", help="print each prompt and answer")
    return parser


def chat_loop(chat: ChatModel, image, args, read=input, out=sys.stdout, err=sys.stderr) -> int:
    """Reads messages until an empty line or EOF; streams each answer to ``out``.

    Returns:
        The number of answered turns.
    """
    conv = chat.new_conversation()
    user, assistant = (_role_label(r) for r in conv.roles)
    images = [image] if image is not None else []
    pending_image = image is not None
    turns = 0
    while True:
        try:
            message = read(f"{user}: ")
        except EOFError:
            message = ""
            print(file=out)
        if not message.strip():
            print("exit...", file=out)
            return turns
        if DEFAULT_IMAGE_TOKEN in message:
            print("[error] remove '<image>' from the message: the image is attached for you", file=err)
            continue
        text = f"{DEFAULT_IMAGE_TOKEN}\n{message}" if pending_image else message
        conv.append_message(conv.roles[0], text)
        conv.append_message(conv.roles[1], None)
        prompt = conv.get_prompt()
        print(f"{assistant}: ", end="", file=out, flush=True)
        shown, update = "", None
        try:
            for update in chat.stream(prompt, images, temperature=args.temperature,
                                      top_p=args.top_p, max_new_tokens=args.max_new_tokens, stop=conv.stop_str):
                if update.text.startswith(shown):
                    print(update.text[len(shown):], end="", file=out, flush=True)
                shown = update.text
        except RequestError as error:
            print(file=out)
            print(f"[error] {error}", file=err)
            del conv.messages[-2:]  # the turn never happened; the next message starts from before it
            continue
        print(file=out, flush=True)
        conv.messages[-1][-1] = update.text
        pending_image = False
        turns += 1
        print(f"[{stats_line(update.visual_tokens, chat.projector_type, update.time_to_first_token)}]",
              file=err, flush=True)
        if args.debug:
            print({"prompt": prompt, "outputs": update.text}, file=err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    image = None
    if args.image_file is not None and not args.image_file.strip():  # e.g. an unset shell variable
        print("error: --image-file is empty: give an image file or URL, or leave the flag out for a text-only chat",
              file=sys.stderr)
        return 2
    if args.image_file is not None:
        try:
            image = load_image(args.image_file)
        except RequestError as error:  # names the file or URL
            print(f"error: --image-file: {error}", file=sys.stderr)
            return 2
    chat = ChatModel.from_pretrained(args.model_path, args.model_base, None, args.load_8bit, args.load_4bit,
                                     device=args.device or default_device(), conv_mode=args.conv_mode)
    if image is not None and not chat.is_multimodal:
        print(f"error: {args.model_path} is a text-only model; drop --image-file", file=sys.stderr)
        return 2
    chat_loop(chat, image, args)
    return 0


if __name__ == "__main__":
    from llava.entry import run_main

    sys.exit(run_main(main))
