"""The batch order of stages 1-2: grouped by modality and length, whole batches, a share per process."""

from __future__ import annotations

import numpy as np
import pytest

from mmphi.mm.sampling import BatchOrder, batches_per_epoch, padding_report, padding_share


def _sample(n: int = 203, text_only: int = 41):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 100, size=n)
    images = np.ones(n, bool)
    images[rng.choice(n, text_only, replace=False)] = False
    return lengths, images


@pytest.mark.parametrize("group_by", ["modality", "length", "none"])
def test_every_mode_is_deterministic_covers_the_epoch_and_reshuffles(group_by):
    lengths, images = _sample()
    a, b = (BatchOrder(lengths, 1, group_by, 4, images) for _ in range(2))
    per_epoch = a.per_epoch(8)
    batches = [a.batch(i, 8) for i in range(per_epoch)]
    assert all(len(x) == 8 for x in batches)  # whole batches only
    assert all(np.array_equal(x, b.batch(i, 8)) for i, x in enumerate(batches))
    assert set(np.concatenate(batches).tolist()) == set(range(len(lengths)))
    assert not np.array_equal(a.batch(per_epoch, 8), batches[0])  # the next epoch is another order


def test_modality_grouping_keeps_image_and_text_only_examples_apart():
    lengths, images = _sample()
    order = BatchOrder(lengths, 0, "modality", 4, images)
    batches = order.epoch(0, 8)
    assert all(images[x].all() or not images[x].any() for x in batches)
    assert len(batches) == batches_per_epoch([162, 41], 8) == 21 + 6
    mixed = BatchOrder(lengths, 0, "length", 4, images).epoch(0, 8)
    assert any(images[x].any() and not images[x].all() for x in mixed)  # by length alone they mix


def test_grouping_sorts_within_mega_batches_and_pads_far_less():
    lengths, images = _sample()
    grouped = BatchOrder(lengths, 0, "length", 4, images).epoch(0, 8)
    unsorted = BatchOrder(lengths, 0, "none", 4, images).epoch(0, 8)
    spread = np.mean([np.ptp(lengths[x]) for x in grouped])
    assert spread < 0.5 * np.mean([np.ptp(lengths[x]) for x in unsorted])
    assert padding_share(lengths, grouped, 8, 1) < 0.5 * padding_share(lengths, unsorted, 8, 1)


def test_with_all_images_modality_grouping_is_the_length_grouped_order():
    """Runs on image-only data (captions, the shapes world) keep the batch order they had before."""
    lengths = np.random.default_rng(3).integers(5, 100, size=77)
    a, b = BatchOrder(lengths, 5, "modality", 3), BatchOrder(lengths, 5, "length", 3)
    assert all(np.array_equal(a.batch(i, 8), b.batch(i, 8)) for i in range(25))


def test_padding_share_pads_each_process_share_to_its_own_longest():
    lengths = np.array([10, 8, 3, 1])
    one = [np.array([0, 1, 2, 3])]
    assert padding_share(lengths, one, 4, 1) == pytest.approx(1 - 22 / 40)
    # Two processes of two: [10, 8] pads to 10, [3, 1] to 3.
    assert padding_share(lengths, one, 2, 2) == pytest.approx(1 - 22 / (20 + 6))


def test_each_process_gets_a_contiguous_share_of_similar_lengths():
    lengths, images = _sample()
    order = BatchOrder(lengths, 0, "modality", 8, images)
    report = padding_report(lengths, images, 0, "modality", 8, 4, 2)
    assert report["batches"] == order.per_epoch(8) and report["processes"] == 2
    # Per-process shares of a sorted global batch pad less than the global batch padded as one.
    batches = order.epoch(0, 8)
    assert padding_share(lengths, batches, 4, 2) <= padding_share(lengths, batches, 8, 1)
    assert report["grouped"] == pytest.approx(padding_share(lengths, batches, 4, 2))


def test_a_modality_smaller_than_a_batch_still_fills_whole_batches():
    lengths = np.arange(20)
    images = np.array([True] * 17 + [False] * 3)
    batches = BatchOrder(lengths, 0, "modality", 2, images).epoch(0, 8)
    assert all(len(x) == 8 for x in batches)
    assert sum(not images[x].any() for x in batches) == 1  # the 3 text-only examples, repeated to fill one batch


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="group_by"):
        BatchOrder([1, 2], 0, "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="megabatch"):
        BatchOrder([1, 2], 0, "length", 0)
