"""LLaVA's lazy supervised dataset: samples are tokenized and their images read when fetched.

``LazySupervisedDataset`` takes the samples that passed :mod:`llava.data.validation` and knows
how many tokens an image becomes (``model.num_image_tokens()``), so that

* ``lengths`` / ``modality_lengths`` (for the length-grouped sampler) count visual tokens, and
* truncation keeps ``text + visual tokens <= model_max_length`` by cutting the end of the
  text, never an image; a sample whose prompt (up to its last image) does not fit, or of which
  no answer token would remain, raises ``SampleTooLongError`` naming the sample.

``check_tokenization`` runs the text side of the first samples before training starts, so a
wrong ``--version`` for the tokenizer or an over-long sample stops the run at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch.utils.data import Dataset

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import Conversation
from llava.data.preprocess import Tokenized, preprocess, preprocess_multimodal
from llava.data.validation import BadSample, has_image, sample_id
from llava.mm_utils import process_images

logger = logging.getLogger(__name__)

#: How many mismatched sample ids a report names.
REPORT_IDS = 5


class SampleTooLongError(ValueError):
    """A sample cannot fit in ``model_max_length`` without cutting an image or all of its answer."""


@dataclass
class TokenizationCheck:
    """Result of :func:`check_tokenization`.

    Attributes:
        checked: samples tokenized.
        mismatched: ``(sample id or index, why)`` for samples whose labels could not be aligned.
        too_long: samples that cannot fit (bad samples, reason ``too_long``).
        truncated: ``(sample id or index, answer tokens cut, answer tokens in all)`` for samples cut
            to fit ``model_max_length`` that keep some of their answers.
        length_checked: samples whose length was checked (all of them with ``check_all_lengths``).
    """

    checked: int = 0
    mismatched: list[tuple[str, str]] = field(default_factory=list)
    too_long: list[BadSample] = field(default_factory=list)
    truncated: list[tuple[str, int, int]] = field(default_factory=list)
    length_checked: int = 0

    def truncation_message(self) -> str:
        cut = sum(c for _, c, _ in self.truncated)
        total = sum(t for _, _, t in self.truncated)
        first = ", ".join(f"{sid!r} ({c} of {t})" for sid, c, t in self.truncated[:REPORT_IDS])
        return (f"{len(self.truncated)} of {self.length_checked} length-checked samples are cut to fit "
                f"model_max_length, losing {cut} of their {total} answer tokens; first: {first}")

    def mismatch_message(self) -> str:
        first = ", ".join(f"{sid!r} ({why})" for sid, why in self.mismatched[:REPORT_IDS])
        return (f"tokenization mismatch in {len(self.mismatched)} of {self.checked} checked samples; "
                f"first: {first}")


class LazySupervisedDataset(Dataset):
    """Samples in LLaVA's format, tokenized with a conversation template when fetched.

    Args:
        samples: the sample dicts (``id``, ``conversations``, optional ``image``).
        tokenizer: a fast Hugging Face tokenizer.
        conv: the conversation template (from ``--version``).
        num_image_tokens: visual tokens per image (``model.num_image_tokens()``); 0 for a
            text-only model.
        model_max_length: longest sequence, visual tokens included.
        image_folder: folder the ``image`` paths are relative to.
        image_processor: the vision tower's processor (``None`` for a text-only model).
        image_aspect_ratio: ``"pad"`` pads to a square of the mean colour first.
        mm_use_im_start_end: wrap the image token in ``<im_start>``/``<im_end>``.
        version: the ``--version`` name (``mmtag`` variants change the image tag).
        indices: each sample's index in the data file (for messages); defaults to 0..n-1.
    """

    def __init__(self, samples: list[dict], tokenizer, conv: Conversation, *, num_image_tokens: int,
                 model_max_length: int, image_folder: str | None = None, image_processor=None,
                 image_aspect_ratio: str = "square", mm_use_im_start_end: bool = False, version: str = "v1",
                 indices: list[int] | None = None):
        super().__init__()
        self.samples = samples
        self.tokenizer = tokenizer
        self.conv = conv
        self.num_image_tokens = num_image_tokens
        self.model_max_length = model_max_length
        self.image_folder = image_folder
        self.image_processor = image_processor
        self.image_aspect_ratio = image_aspect_ratio
        self.mm_use_im_start_end = mm_use_im_start_end
        self.version = version
        self.indices = list(indices) if indices is not None else list(range(len(samples)))
        self.is_multimodal = image_processor is not None
        self._cut_reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _word_count(self, sample: dict) -> int:
        return sum(len(turn["value"].split()) for turn in sample["conversations"])

    @property
    def lengths(self) -> list[int]:
        """Approximate length per sample: words plus visual tokens (as upstream, which adds 128)."""
        return [self._word_count(s) + (self.num_image_tokens if has_image(s) else 0) for s in self.samples]

    @property
    def modality_lengths(self) -> list[int]:
        """Like ``lengths``, negative for text-only samples (for ``group_by_modality_length``)."""
        return [self._word_count(s) + self.num_image_tokens if has_image(s) else -max(1, self._word_count(s))
                for s in self.samples]

    def describe(self, i: int) -> str:
        sid = sample_id(self.samples[i])
        return f"sample {sid!r} (index {self.indices[i]})" if sid is not None else f"sample at index {self.indices[i]}"

    def tokenize(self, i: int) -> Tokenized:
        """Text side of sample ``i``: ids (one ``IMAGE_TOKEN_INDEX`` per image) and labels, truncated
        so that text + visual tokens fit in ``model_max_length``.

        Raises:
            SampleTooLongError: the prompt up to the image, or every answer token, does not fit.
        """
        sample = self.samples[i]
        turns = sample["conversations"]
        if self.is_multimodal:
            turns = preprocess_multimodal(turns, mm_use_im_start_end=self.mm_use_im_start_end, version=self.version)
        result = preprocess(turns, self.tokenizer, self.conv)
        return self._fit(i, result)

    def _fit(self, i: int, result: Tokenized) -> Tokenized:
        ids, labels = result.input_ids, result.labels
        image_positions = [j for j, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
        extra = len(image_positions) * (self.num_image_tokens - 1)
        if len(ids) + extra <= self.model_max_length:
            return result
        budget = self.model_max_length - extra  # text tokens that fit next to the visual tokens
        if image_positions and image_positions[-1] >= budget:
            raise SampleTooLongError(
                f"{self.describe(i)} does not fit in model_max_length={self.model_max_length}: its text up to the "
                f"image is {image_positions[-1] + 1} tokens and the image adds {self.num_image_tokens} visual tokens")
        ids, labels = ids[:budget], labels[:budget]
        if result.mismatch is None and all(label == IGNORE_INDEX for label in labels):
            raise SampleTooLongError(
                f"{self.describe(i)} does not fit in model_max_length={self.model_max_length}: "
                f"{len(result.input_ids) + extra} tokens with its {len(image_positions)} image(s), and cutting it to "
                f"fit leaves no answer token")
        cut = sum(label != IGNORE_INDEX for label in result.labels[budget:])
        return Tokenized(ids, labels, result.mismatch, cut_labels=cut)

    def surely_fits(self, i: int) -> bool:
        """A cheap bound: True when sample ``i`` fits in ``model_max_length`` whatever the
        tokenizer does. A token covers at least one byte of the rendered text, so the text's
        UTF-8 bytes, plus a margin per turn for the template's roles and separators and for a
        tokenizer's added prefix, bound its token count."""
        turns = self.samples[i]["conversations"]
        text = sum(len(t["value"].encode("utf-8")) for t in turns)
        template = len((self.conv.system or "").encode("utf-8")) + 16 + len(turns) * (
            max(len(r.encode("utf-8")) for r in self.conv.roles) + len((self.conv.sep or "").encode("utf-8"))
            + len((self.conv.sep2 or "").encode("utf-8")) + 8)
        images = 1 if has_image(self.samples[i]) else 0
        return text + template + images * self.num_image_tokens <= self.model_max_length

    def image_path(self, i: int) -> str:
        return os.path.join(self.image_folder or "", self.samples[i]["image"])

    def load_image(self, i: int) -> torch.Tensor:
        """[3, S, S] pixel values of sample ``i``'s image.

        Raises:
            ValueError: naming the sample and the path when the file cannot be read.
        """
        path = self.image_path(i)
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except Exception as err:  # PIL raises many types; report the sample and the path
            raise ValueError(f"{self.describe(i)}: cannot read image {path}: {type(err).__name__}: {err}") from err
        return process_images([image], self.image_processor, {"image_aspect_ratio": self.image_aspect_ratio})[0]

    def __getitem__(self, i: int) -> dict:
        tokens = self.tokenize(i)
        if tokens.cut_labels and i not in self._cut_reported:  # once per sample, not every epoch
            self._cut_reported.add(i)
            logger.warning("%s is cut to fit model_max_length=%d: %d of its answer tokens are not trained on",
                           self.describe(i), self.model_max_length, tokens.cut_labels)
        if tokens.mismatch is not None:
            logger.warning("Tokenization mismatch in %s: %s; its labels are all ignored and it is counted",
                           self.describe(i), tokens.mismatch)
        item = {
            "input_ids": torch.tensor(tokens.input_ids, dtype=torch.long),
            "labels": torch.tensor(tokens.labels, dtype=torch.long),
            "id": sample_id(self.samples[i]) or f"index-{self.indices[i]}",
            "tokenization_mismatch": tokens.mismatch is not None,
        }
        if has_image(self.samples[i]):
            if not self.is_multimodal:
                raise ValueError(f"{self.describe(i)} has an image but the model has no vision tower "
                                 f"(pass --vision_tower)")
            item["image"] = self.load_image(i)
        return item

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(3, H, W) of processed images, for placeholders; ``None`` for a text-only model."""
        if self.image_processor is None:
            return None
        crop = self.image_processor.crop_size
        return (3, crop["height"], crop["width"])


def check_tokenization(dataset: LazySupervisedDataset, max_samples: int = -1,
                       check_all_lengths: bool = False) -> TokenizationCheck:
    """Tokenizes the text of the first ``max_samples`` samples (all if negative), collecting
    mismatches, samples that cannot fit and samples cut to fit.

    Args:
        check_all_lengths: also check the length of every later sample: those that
            :meth:`LazySupervisedDataset.surely_fits` cannot clear are tokenized (so a sample that
            cannot fit is found now, not when training reaches it).
    """
    result = TokenizationCheck()
    count = len(dataset) if max_samples < 0 else min(max_samples, len(dataset))
    for i in range(len(dataset) if check_all_lengths else count):
        if i >= count and dataset.surely_fits(i):
            result.length_checked += 1
            continue
        name = sample_id(dataset.samples[i]) or f"index-{dataset.indices[i]}"
        try:
            tokens = dataset.tokenize(i)
        except SampleTooLongError as err:
            result.too_long.append(BadSample(dataset.indices[i], sample_id(dataset.samples[i]), "too_long", str(err)))
        else:
            if tokens.cut_labels:
                result.truncated.append((name, tokens.cut_labels, tokens.cut_labels + sum(
                    label != IGNORE_INDEX for label in tokens.labels)))
            if tokens.mismatch is not None and i < count:
                result.mismatched.append((name, tokens.mismatch))
        result.length_checked += 1
        result.checked += i < count
    return result
