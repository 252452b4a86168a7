"""The order of training batches for stages 1 and 2, and the padding it costs (light module: numpy only).

Batches are right-padded to their own longest example (``mmphi.mm.data.collate``: dynamic padding), so
what decides the padding is which examples share a batch. ``group_by``:

* ``modality`` (LLaVA's ``group_by_modality_length``): image-bearing and text-only examples go to separate
  batches; within each modality, a seeded permutation of the epoch is cut into mega-batches of
  ``megabatch`` global micro-batches, each sorted by length (longest first) before it is split;
* ``length``: the same without separating the modalities;
* ``none``: the shuffled epoch cut into batches as it comes (what padding costs without grouping).

The batch order is then shuffled, so a run does not see all its long batches together. Global
micro-batch ``i`` is a pure function of (seed, i): resuming needs only the step. A process takes its
contiguous share of a global micro-batch (``rank * size`` on), so with grouping every process gets
examples of about the same length and the processes finish their steps together. A modality with a
number of examples that is not a multiple of the global micro-batch repeats a few of its own examples
in its last batch (at most one batch's worth per epoch), so every batch is whole and of one modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Grouping = Literal["modality", "length", "none"]
GROUPINGS: tuple[Grouping, ...] = ("modality", "length", "none")


def batches_per_epoch(counts: Sequence[int], size: int) -> int:
    """Global micro-batches in an epoch whose parts (the modalities, or all examples as one part) hold
    ``counts`` examples: each part is cut into whole batches of ``size``."""
    return sum(-(-n // size) for n in counts if n)


class BatchOrder:
    """Global micro-batch ``i`` (indices into the examples) of a seeded, optionally length-grouped epoch."""

    def __init__(self, lengths: Sequence[int], seed: int, group_by: Grouping = "modality", megabatch: int = 32,
                 images: Sequence[bool] | None = None):
        if group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {', '.join(GROUPINGS)}, got {group_by!r}")
        if megabatch < 1:
            raise ValueError(f"megabatch must be >= 1, got {megabatch}")
        self.lengths = np.asarray(lengths)
        self.images = np.ones(len(self.lengths), bool) if images is None else np.asarray(images, bool)
        if len(self.images) != len(self.lengths):
            raise ValueError("images must flag every example")
        self.seed, self.group_by, self.megabatch = seed, group_by, megabatch
        self._cache: dict[tuple[int, int], list[np.ndarray]] = {}

    def part_counts(self) -> list[int]:
        if self.group_by != "modality":
            return [len(self.lengths)]
        n_img = int(self.images.sum())
        return [n_img, len(self.lengths) - n_img]

    def per_epoch(self, size: int) -> int:
        return batches_per_epoch(self.part_counts(), size)

    def epoch(self, epoch: int, size: int) -> list[np.ndarray]:
        """The global micro-batches of one epoch, in training order."""
        key = (epoch, size)
        if key not in self._cache:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.lengths))
            parts = [perm] if self.group_by != "modality" else [perm[self.images[perm]], perm[~self.images[perm]]]
            batches: list[np.ndarray] = []
            span = size * (self.megabatch if self.group_by != "none" else 1)
            for part in parts:
                if not len(part):
                    continue
                part = np.resize(part, -(-len(part) // size) * size)  # whole batches: wrap around the part
                for start in range(0, len(part), span):
                    chunk = part[start:start + span]
                    if self.group_by != "none":
                        chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                    batches += [chunk[j:j + size] for j in range(0, len(chunk), size)]
            order = rng.permutation(len(batches))
            self._cache = {key: [batches[j] for j in order]}
        return self._cache[key]

    def batch(self, index: int, size: int) -> np.ndarray:
        per_epoch = self.per_epoch(size)
        return self.epoch(index // per_epoch, size)[index % per_epoch]


def padding_share(lengths: Sequence[int], batches: Sequence[np.ndarray], size: int, world: int) -> float:
    """Padding tokens / all tokens over ``batches`` (global micro-batches of ``size * world``), each process
    padding its own share of ``size`` examples to that share's longest (as ``collate`` does)."""
    if not len(batches):
        return 0.0
    lens = np.asarray(lengths)[np.stack(list(batches))].reshape(len(batches), world, size)  # (batches, rank, i)
    padded = float(lens.max(axis=-1).sum()) * size
    return 1.0 - float(lens.sum()) / padded if padded else 0.0


def padding_report(lengths: Sequence[int], images: Sequence[bool], seed: int, group_by: Grouping, megabatch: int,
                   size: int, world: int) -> dict:
    """The padding share of epoch 0 with ``group_by`` beside the same epoch unsorted (``none``)."""
    order = BatchOrder(lengths, seed, group_by, megabatch, images)
    unsorted = BatchOrder(lengths, seed, "none", megabatch, images)
    grouped_batches = order.epoch(0, size * world)
    return {"group_by": group_by, "megabatch": megabatch, "batch_size": size, "processes": world,
            "batches": len(grouped_batches),
            "grouped": padding_share(lengths, grouped_batches, size, world),
            "unsorted": padding_share(lengths, unsorted.epoch(0, size * world), size, world)}


def describe_padding(report: dict, what: str) -> str:
    return (f"{what}: padding {report['grouped'] * 100:.1f}% of tokens with {report['group_by']} grouping vs. "
            f"{report['unsorted'] * 100:.1f}% unsorted (an epoch of {report['batches']} micro-batches of "
            f"{report['batch_size']} x {report['processes']} process(es), each padded to its own longest)")
