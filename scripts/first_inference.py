"""A first end-to-end inference on the embedded default, on CPU, with nothing downloaded.

Builds a LLaVA checkpoint from the embedded SmolLM2-135M-Instruct, a CLIP-shaped vision tower
with random weights (no pretrained tower can be installed here) and a fresh projector, saves it
in LLaVA-1.5's on-disk format, loads it back with ``load_pretrained_model`` and answers a
question about an image. The projector and tower are untrained, so the image carries no
meaning to the LLM yet: this shows the path pixels -> tower -> projector -> LLM works, and how
many visual tokens each projector gives the LLM.

    python scripts/first_inference.py --mm_projector_type delta
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from transformers import AutoTokenizer, CLIPVisionConfig  # noqa: E402

from llava.constants import DEFAULT_IMAGE_TOKEN  # noqa: E402
from llava.conversation import conv_templates  # noqa: E402
from llava.embedded import prepare_embedded_llm  # noqa: E402
from llava.mm_utils import KeywordsStoppingCriteria, process_images, tokenizer_image_token  # noqa: E402
from llava.model import LlavaConfig, LlavaLlamaForCausalLM  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava.model.multimodal_encoder.clip_encoder import save_random_vision_tower  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()  # the new tower/projector weights are reported missing by design


def build_checkpoint(out: Path, llm_dir: str, projector: str, image_size: int) -> Path:
    tower_dir = out / "vision_tower"
    save_random_vision_tower(tower_dir, CLIPVisionConfig(
        hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=6,
        image_size=image_size, patch_size=14))
    llm_config = LlavaConfig.from_pretrained(llm_dir).to_dict()
    llm_config.pop("model_type", None)
    config = LlavaConfig(**{**llm_config, "mm_vision_tower": str(tower_dir), "mm_hidden_size": 192,
                            "mm_projector_type": projector, "mm_delta_layers": "1,2,3,4",
                            "image_aspect_ratio": "pad", "conv_mode": "chatml"})
    model = LlavaLlamaForCausalLM.from_pretrained(llm_dir, config=config)
    model.get_vision_tower().load_model()
    ckpt = out / f"llava-smollm2-{projector}"
    model.save_pretrained(ckpt)
    AutoTokenizer.from_pretrained(llm_dir).save_pretrained(ckpt)
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mm_projector_type", default="mlp2x_gelu")
    parser.add_argument("--out", default="checkpoints/first_inference")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--query", default="What is the capital of France?")
    args = parser.parse_args()

    out = Path(args.out)
    llm_dir = prepare_embedded_llm()
    ckpt = build_checkpoint(out, llm_dir, args.mm_projector_type, args.image_size)
    tokenizer, model, processor, context_len = load_pretrained_model(str(ckpt), None, ckpt.name, device="cpu")

    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((40, 20, 120, 100), fill="red")
    pixels = process_images([image], processor, model.config)
    print(f"checkpoint: {ckpt}  (loaded as {type(model).__name__}, context {context_len})")
    print(f"projector: {args.mm_projector_type}  visual tokens per image: {model.num_image_tokens()}")
    for label, images in (("text only", None), ("with an image (untrained tower and projector)", pixels)):
        conv = conv_templates[model.config.conv_mode].copy()
        prompt = args.query if images is None else f"{DEFAULT_IMAGE_TOKEN}\n{args.query}"
        conv.append_message(conv.roles[0], prompt)
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt").unsqueeze(0)
        stop = KeywordsStoppingCriteria([conv.stop_str], tokenizer, ids)
        start = time.time()
        with torch.inference_mode():
            out_ids = model.generate(ids, images=images, do_sample=False, max_new_tokens=32,
                                     stopping_criteria=[stop])
        answer = tokenizer.decode(out_ids[0], skip_special_tokens=True).strip()
        print(f"[{label}] Q: {args.query}\n  A: {answer!r}  ({time.time() - start:.1f} s on {model.device})")


if __name__ == "__main__":
    main()
