"""Image and prompt helpers shared by training, evaluation and serving (upstream names).

* ``process_images``: PIL images -> pixel tensor ``[B, 3, H, W]``, padding to a square with
  the processor's mean colour when ``image_aspect_ratio == "pad"`` (LLaVA-1.5 finetuning).
* ``tokenizer_image_token``: prompt with ``<image>`` tags -> token ids with one
  ``IMAGE_TOKEN_INDEX`` (-200) per tag, where the model later splices the image features.
* ``KeywordsStoppingCriteria``: stop generation per sequence at a stop string.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def load_image_from_base64(image: str | bytes) -> Image.Image:
    """Decode a base64-encoded image file (PNG, JPEG, ...) into a PIL image."""
    return Image.open(BytesIO(base64.b64decode(image)))


def expand2square(pil_img: Image.Image, background_color) -> Image.Image:
    """Pad an image to a square, centring it on a ``background_color`` canvas.

    Args:
        pil_img: image of size (W, H).
        background_color: fill colour in the image's mode, e.g. an RGB tuple of ints.

    Returns:
        The image itself if W == H, else a new max(W, H)-sided square image; the original
        sits at offset ((side - W) // 2, (side - H) // 2).
    """
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def _config_value(model_cfg: Any, key: str, default: Any = None) -> Any:
    """Read ``key`` from a config object or a plain dict (eval scripts pass either)."""
    if model_cfg is None:
        return default
    if isinstance(model_cfg, Mapping):
        return model_cfg.get(key, default)
    return getattr(model_cfg, key, default)


def process_images(images: Sequence[Image.Image], image_processor, model_cfg):
    """Turn PIL images into the pixel tensor the vision tower expects.

    Args:
        images: PIL images (converted to RGB by the caller, as upstream).
        image_processor: a transformers image processor (``CLIPImageProcessor``) with
            ``image_mean`` and ``preprocess``.
        model_cfg: the model config (or a dict); its ``image_aspect_ratio`` selects
            "pad" (pad to a square of the processor's mean colour, then preprocess);
            anything else (None, "square", ...) preprocesses as is (resize + centre crop).

    Returns:
        ``[B, 3, H, W]`` float tensor, or a list of ``[3, H, W]`` tensors if the processed
        shapes differ (only possible with a processor that does not crop).
    """
    image_aspect_ratio = _config_value(model_cfg, "image_aspect_ratio", None)
    if image_aspect_ratio == "pad":
        fill = tuple(int(x * 255) for x in image_processor.image_mean)
        images = [expand2square(image, fill) for image in images]
    pixel_values = [
        image_processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
        for image in images
    ]
    if pixel_values and all(p.shape == pixel_values[0].shape for p in pixel_values):
        return torch.stack(pixel_values, dim=0)
    return pixel_values


def tokenizer_image_token(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX,
                          return_tensors: str | None = None):
    """Tokenize a prompt, putting one ``image_token_index`` where each ``<image>`` tag was.

    Each text chunk between tags is tokenized on its own (as upstream does, so ids match
    released checkpoints' training). If the tokenizer adds a BOS to every chunk, only the
    first one is kept.

    Args:
        prompt: text with zero or more ``<image>`` tags.
        tokenizer: a Hugging Face tokenizer.
        image_token_index: the id placed for each tag (IMAGE_TOKEN_INDEX, -200).
        return_tensors: None for a list of ints, "pt" for a 1-D LongTensor.

    Returns:
        ``list[int]`` or a ``[T]`` LongTensor.
    """
    if return_tensors not in (None, "pt"):
        raise ValueError(f"Unsupported tensor type: {return_tensors!r}; use None or 'pt'")
    bos = tokenizer.bos_token_id
    input_ids: list[int] = []
    for i, chunk in enumerate(prompt.split(DEFAULT_IMAGE_TOKEN)):
        ids = list(tokenizer(chunk).input_ids)
        if i > 0:
            input_ids.append(image_token_index)
            if bos is not None and ids and ids[0] == bos:
                ids = ids[1:]
        input_ids.extend(ids)
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    return input_ids


def get_model_name_from_path(model_path: str) -> str:
    """Name a model after its folder; a ``checkpoint-N`` folder gets its parent's name too.

    ``"runs/llava-v1.5-7b/checkpoint-100/"`` -> ``"llava-v1.5-7b_checkpoint-100"``,
    ``"liuhaotian/llava-v1.5-7b"`` -> ``"llava-v1.5-7b"``.
    """
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop each sequence once it has generated one of ``keywords``.

    A row is done when its generated token ids end with a keyword's ids, or when a keyword
    appears in the decoded text of its last few generated tokens.

    Differs from upstream on purpose: upstream returns one bool for the whole batch
    (``all`` rows) and locates new tokens by the prompt length, which breaks when
    ``generate(inputs_embeds=...)`` passes only the new tokens. Here ``__call__`` returns a
    ``[B]`` bool tensor (transformers >= 4.39 stops rows individually), and new tokens are
    everything after the prompt if the ids still start with the prompt, else all of them.

    Args:
        keywords: stop strings, e.g. ``[conv.stop_str]``.
        tokenizer: the tokenizer used for generation.
        input_ids: the prompt ids ``[B, T]`` (or ``[T]``) given to ``generate``.
    """

    def __init__(self, keywords: Sequence[str], tokenizer, input_ids: torch.Tensor):
        if isinstance(keywords, str):
            keywords = [keywords]
        keywords = [k for k in keywords if k]
        if not keywords:
            raise ValueError("KeywordsStoppingCriteria needs at least one non-empty keyword")
        self.keywords = list(keywords)
        self.tokenizer = tokenizer
        bos = tokenizer.bos_token_id
        self.keyword_ids: list[torch.Tensor] = []
        for keyword in self.keywords:
            ids = list(tokenizer(keyword, add_special_tokens=False).input_ids)
            if len(ids) > 1 and ids[0] == bos:
                ids = ids[1:]
            self.keyword_ids.append(torch.tensor(ids, dtype=torch.long))
        self.max_keyword_len = max(len(ids) for ids in self.keyword_ids)
        # Enough tokens to spell any keyword even when generated one character per token.
        self.window = max(self.max_keyword_len, max(len(k) for k in self.keywords)) + 1
        prompt = torch.as_tensor(input_ids).detach().cpu()
        self.prompt_ids = prompt.unsqueeze(0) if prompt.dim() == 1 else prompt
        self.start_len = self.prompt_ids.shape[1]

    def _num_new_tokens(self, output_ids: torch.Tensor) -> torch.Tensor:
        """Per row, how many trailing tokens of ``output_ids`` were generated."""
        batch, length = output_ids.shape
        num_new = torch.full((batch,), length, dtype=torch.long)
        prompt = self.prompt_ids
        if length > self.start_len and prompt.shape[0] in (1, batch):
            head = output_ids[:, : self.start_len].cpu()
            starts_with_prompt = (head == prompt).all(dim=1)
            num_new[starts_with_prompt] = length - self.start_len
        return num_new

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        """Return ``[B]`` bools: True where the row has produced a keyword.

        Args:
            input_ids: ``[B, L]`` ids so far (prompt + new tokens, or new tokens only).
            scores: unused.
        """
        batch = input_ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool)
        if input_ids.shape[1] == 0:
            return done.to(input_ids.device)
        num_new = self._num_new_tokens(input_ids)
        tails = input_ids[:, -min(self.window, input_ids.shape[1]):].cpu()
        for row in range(batch):
            n = int(min(num_new[row], tails.shape[1]))
            if n == 0:
                continue
            tail = tails[row, -n:]
            for ids in self.keyword_ids:
                if 0 < len(ids) <= n and torch.equal(tail[-len(ids):], ids):
                    done[row] = True
                    break
            if done[row]:
                continue
            text = self.tokenizer.decode(tail.tolist(), skip_special_tokens=False)
            done[row] = any(keyword in text for keyword in self.keywords)
        return done.to(input_ids.device)
