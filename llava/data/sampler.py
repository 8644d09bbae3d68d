"""Length-grouped sampling (upstream's ``--group_by_modality_length``).

Samples are shuffled into megabatches of ``world_size * batch_size`` (``world_size`` here is
processes x gradient-accumulation steps, as upstream passes it); each megabatch is sorted by
length and split into ``world_size`` chunks of similar total length, so the ranks of one step
get batches of similar cost. With modality grouping, image samples (positive lengths) and
text-only samples (negative lengths) fill separate megabatches, so a step is all-image or
all-text on every rank, and the leftovers of both form one last megabatch.

Differs from upstream on purpose:

* every shuffle draws from one generator seeded by ``seed + epoch``, so the order is the same on
  every rank and again after a resume (upstream draws the per-modality shuffles from the global
  RNG);
* with gradient accumulation (``accumulation_steps`` > 1), each accumulation step of a megabatch
  takes a contiguous run of its length-sorted samples, split evenly over the processes, so a
  micro-batch holds sequences of similar length and carries little padding. Upstream splits the
  whole megabatch into ``processes x accumulation`` chunks of similar total length, which mixes
  long and short sequences in every micro-batch. An optimizer step trains on the same samples
  either way.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


def split_to_even_chunks(indices: list[int], lengths: list[int], num_chunks: int) -> list[list[int]]:
    """Splits ``indices`` into ``num_chunks`` chunks of equal count and similar total length."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0] * num_chunks
    for index in indices:
        shortest = min((c for c in range(num_chunks) if len(chunks[c]) < per_chunk), key=lambda c: totals[c])
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
    return chunks


def check_accumulation(world_size: int, accumulation_steps: int) -> int:
    """The number of processes in ``world_size`` (processes x accumulation steps)."""
    if accumulation_steps < 1 or world_size % accumulation_steps:
        raise ValueError(f"world_size ({world_size}, processes x accumulation steps) is not a multiple of "
                         f"accumulation_steps ({accumulation_steps})")
    return world_size // accumulation_steps


def split_megabatch(megabatch: list[int], lengths: list[int], world_size: int,
                    accumulation_steps: int = 1) -> list[list[int]]:
    """The per-device batches of a length-sorted megabatch, in the order the data loader deals them:
    accumulation step 0 for every process, then step 1, ... Each accumulation step takes the next
    contiguous run of the megabatch, split over the processes by :func:`split_to_even_chunks`."""
    processes = check_accumulation(world_size, accumulation_steps)
    per_step = -(-len(megabatch) // accumulation_steps)  # ceil: a short last megabatch still fills the steps
    return [chunk for start in range(0, len(megabatch), per_step)
            for chunk in split_to_even_chunks(megabatch[start:start + per_step], lengths, processes)]


def get_length_grouped_indices(lengths: list[int], batch_size: int, world_size: int,
                               generator: torch.Generator | None = None, accumulation_steps: int = 1) -> list[int]:
    """A shuffled order in which each megabatch is sorted by length (longest first)."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    megabatches = [sorted(order[i:i + size], key=lambda i: lengths[i], reverse=True)
                   for i in range(0, len(order), size)]
    return [i for mb in megabatches for chunk in split_megabatch(mb, lengths, world_size, accumulation_steps)
            for i in chunk]


def get_modality_length_grouped_indices(lengths: list[int], batch_size: int, world_size: int,
                                        generator: torch.Generator | None = None,
                                        accumulation_steps: int = 1) -> list[int]:
    """Like :func:`get_length_grouped_indices`, keeping image (length > 0) and text-only
    (length < 0) samples in separate megabatches.

    Raises:
        ValueError: a length is 0 (the sign carries the modality).
    """
    if any(length == 0 for length in lengths):
        raise ValueError("modality lengths must be non-zero: positive for image samples, negative for text-only")
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        return get_length_grouped_indices([abs(x) for x in lengths], batch_size, world_size, generator,
                                          accumulation_steps)
    mm = [i for i, length in enumerate(lengths) if length > 0]
    lang = [i for i, length in enumerate(lengths) if length < 0]
    mm_order = [mm[i] for i in get_length_grouped_indices([lengths[i] for i in mm], batch_size, world_size, generator,
                                                          accumulation_steps)]
    lang_order = [lang[i] for i in get_length_grouped_indices([-lengths[i] for i in lang], batch_size, world_size,
                                                              generator, accumulation_steps)]
    size = world_size * batch_size
    mm_mbs = [mm_order[i:i + size] for i in range(0, len(mm_order), size)]
    lang_mbs = [lang_order[i:i + size] for i in range(0, len(lang_order), size)]
    leftover = mm_mbs[-1] + lang_mbs[-1]
    megabatches = mm_mbs[:-1] + lang_mbs[:-1]
    megabatches = [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator).tolist()]
    if leftover:
        megabatches.append(sorted(leftover))
    return [i for mb in megabatches for i in mb]


class LengthGroupedSampler(Sampler):
    """Upstream's sampler: length-grouped order, optionally by modality.

    Args:
        batch_size: per-device batch size.
        world_size: processes x gradient accumulation steps.
        lengths: per sample; with ``group_by_modality`` the sign marks the modality.
        seed: the order depends only on ``seed`` and the epoch (:meth:`set_epoch`).
        accumulation_steps: how many of ``world_size`` are gradient accumulation steps; each takes
            a contiguous length range of the megabatch (see the module docstring).
    """

    def __init__(self, batch_size: int, world_size: int, lengths: list[int], group_by_modality: bool = False,
                 seed: int = 0, accumulation_steps: int = 1):
        if lengths is None:
            raise ValueError("LengthGroupedSampler needs lengths")
        check_accumulation(world_size, accumulation_steps)
        self.accumulation_steps = accumulation_steps
        self.batch_size = batch_size
        self.world_size = world_size
        self.lengths = list(lengths)
        self.group_by_modality = group_by_modality
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.group_by_modality:
            order = get_modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, generator,
                                                        self.accumulation_steps)
        else:
            order = get_length_grouped_indices([abs(x) for x in self.lengths], self.batch_size, self.world_size,
                                               generator, self.accumulation_steps)
        return iter(order)
