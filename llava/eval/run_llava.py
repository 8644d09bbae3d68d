"""Ask a LLaVA checkpoint one question about one or more images and print the answer.

    python -m llava.eval.run_llava --model-path ./checkpoints/llava-v1.5-7b \\
        --image-file view.jpg --query "What is in the image?" [--temperature 0] [--device cpu]

Several images: ``--image-file a.jpg,b.jpg`` (split on ``--sep``) with one ``<image-placeholder>``
per image in the query, where each image goes (a query written with LLaVA's own ``<image>`` tags is
used as written, one image per tag). Without either the image comes first, as upstream. An image may be an http(s) URL. The images, the placeholders and ``--conv-mode`` are
checked before the model loads; a problem is one ``error:`` line and exit code 2. From Python, as
in upstream's README::

    from llava.eval.run_llava import eval_model
    args = type("Args", (), {"model_path": path, "model_base": None, "model_name": None, "query": q,
                             "conv_mode": None, "image_file": "view.jpg", "sep": ",", "temperature": 0,
                             "top_p": None, "num_beams": 1, "max_new_tokens": 512})()
    answer = eval_model(args)
"""

from __future__ import annotations

import argparse
import sys

from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_PLACEHOLDER
from llava.conversation import AUTO_CONV_MODES, check_conv_mode, conv_templates, resolve_conv_mode
from llava.eval.runner import (
    GenerationSettings,
    LoadedModel,
    add_model_args,
    chat_prompt,
    generate_texts,
    image_prompt,
    load_model,
)
from llava.mm_utils import process_images
from llava.serve.inference import RequestError, load_image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser, temperature=0.2, max_new_tokens=512)
    parser.add_argument("--image-file", type=str, required=True)
    parser.add_argument("--query", type=str, required=True)
    parser.add_argument("--sep", type=str, default=",")
    return parser


def image_parser(args) -> list[str]:
    """The image files: ``args.image_file`` split on ``args.sep`` (or a list as is)."""
    if isinstance(args.image_file, str):
        return args.image_file.split(args.sep)
    return list(args.image_file)


def check_inputs(args) -> list[Image.Image]:
    """Loads the images and checks them against the query, and ``--conv-mode``, without the model.

    Returns:
        The RGB images, in order.
    Raises:
        RequestError: an image cannot be read, downloaded or decoded (the message names it), the
            number of images differs from the query's ``<image-placeholder>``s (one image without
            any), or the template is unknown.
    """
    requested = getattr(args, "conv_mode", None)
    if requested not in AUTO_CONV_MODES:
        try:
            check_conv_mode(requested)
        except ValueError as err:
            raise RequestError(str(err)) from None
    files = image_parser(args)
    placeholders, tags = args.query.count(IMAGE_PLACEHOLDER), args.query.count(DEFAULT_IMAGE_TOKEN)
    if placeholders and tags:
        raise RequestError(f"--query has both {IMAGE_PLACEHOLDER} and {DEFAULT_IMAGE_TOKEN}; mark where each image "
                           f"goes with one of them")
    marker = IMAGE_PLACEHOLDER if placeholders or not tags else DEFAULT_IMAGE_TOKEN
    slots = placeholders or tags
    if len(files) != max(slots, 1):  # no marker: one image, placed first
        given = f"{len(files)} image" + ("s" if len(files) != 1 else "")
        where = f"{slots} {marker}s" if slots else f"no {marker}"
        raise RequestError(f"--image-file gives {given} but --query has {where}; "
                           f"put one {marker} in the query where each image goes")
    return [load_image(f) for f in files]


def build_query(query: str, config) -> str:
    """Upstream's placement: each ``<image-placeholder>`` becomes an image, else one image leads. A
    query that already holds ``<image>`` tags keeps them where they are (upstream added another)."""
    token = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN \
        if getattr(config, "mm_use_im_start_end", False) else DEFAULT_IMAGE_TOKEN
    if IMAGE_PLACEHOLDER in query:
        return query.replace(IMAGE_PLACEHOLDER, token)
    if DEFAULT_IMAGE_TOKEN in query:
        return query.replace(DEFAULT_IMAGE_TOKEN, token)
    return image_prompt(query, config)


def eval_model(args, loaded: LoadedModel | None = None) -> str:
    """Prints and returns the answer to ``args.query`` about ``args.image_file``.

    Args:
        args: an argparse namespace or any object with upstream's fields (``device`` optional).
        loaded: an already loaded model, e.g. to ask several questions.
    Raises:
        RequestError: bad images, query or template (see ``check_inputs``), before any model loads.
    """
    images = check_inputs(args)
    if loaded is None:
        load_args = argparse.Namespace(model_path=args.model_path, model_base=getattr(args, "model_base", None),
                                       device=getattr(args, "device", None), conv_mode=getattr(args, "conv_mode", None))
        loaded = load_model(load_args)
    config = loaded.model.config
    # Differs from upstream on purpose: the template is never guessed from the model's name.
    requested = getattr(args, "conv_mode", None)
    conv_mode = resolve_conv_mode(config, requested) if requested not in AUTO_CONV_MODES else loaded.conv_mode
    prompt = chat_prompt(conv_mode, build_query(args.query, config))
    pixels = process_images(images, loaded.image_processor, config)
    settings = GenerationSettings(args.temperature, getattr(args, "top_p", None), getattr(args, "num_beams", 1),
                                  getattr(args, "max_new_tokens", 512))
    # One prompt row; its images in order (a list when the processor left them differently sized).
    row_images = [pixels] if not isinstance(pixels, list) else list(pixels)
    outputs = generate_texts(loaded.model, loaded.tokenizer, [prompt], row_images, [[im.size for im in images]],
                             settings, conv_templates[conv_mode].stop_str)[0]
    print(outputs)
    return outputs


def main(argv: list[str] | None = None) -> str:
    """Prints and returns the answer; a bad input exits with code 2 and one ``error:`` line."""
    args = build_parser().parse_args(argv)
    try:
        return eval_model(args)
    except RequestError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
