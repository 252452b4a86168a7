"""``bench/padding.py``: on a LLaVA-Instruct-like length sample, grouped batches pad at most 10% of their tokens."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "padding.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("padding_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample(bench):
    return bench.llava_like_lengths(20000, image_tokens=576, max_len=2048)


def test_the_sample_is_shaped_like_llava_instruct(bench, sample):
    lengths, images = sample
    again = bench.llava_like_lengths(20000, image_tokens=576, max_len=2048)
    assert np.array_equal(lengths, again[0]) and np.array_equal(images, again[1])  # deterministic
    text = lengths[images] - 576
    assert 150 <= np.median(text) <= 250  # text tokens of an image record, template included
    assert lengths.max() == 2048 and np.percentile(lengths[images], 99) > 1000  # a long tail, cut at max_len
    assert 0.05 < (~images).mean() < 0.2  # some text-only records


@pytest.mark.parametrize(("size", "world"), [(4, 1), (4, 8), (16, 1), (32, 1)])
def test_grouped_batches_pad_at_most_a_tenth_of_their_tokens(bench, sample, size, world):
    lengths, images = sample
    share = bench.measure(lengths, images, size, world)
    assert share["modality"] <= 0.10
    assert share["none"] > 3 * share["modality"]  # unsorted batches pad several times more


def test_the_script_prints_and_writes_the_table(bench, tmp_path, capsys):
    out = tmp_path / "pad.json"
    res = bench.main(["--records", "3000", "--json", str(out)])
    assert "unsorted/modality" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["rows"] == res["rows"] and len(saved["rows"]) == len(bench.SHAPES)
    assert all(r["modality"] <= r["none"] for r in saved["rows"])
