"""Metrics: answer normalisation, per-type accuracy, BLEU-4 / CIDEr-D on hand-computed cases, WER, perplexity."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from mmphi.common.questions import accuracy_by_type, normalize_answer, ordered_types, vqa_correct
from mmphi.eval import bleu4, cider, perplexity, word_error_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("red", "red"),
        ("  Red.  ", "red"),
        ("The circle", "circle"),
        ("an orange square!", "orange square"),
        ("2", "two"),
        ("0", "zero"),
        ("center", "centre"),
        ("In the CENTER.", "in the centre"),
        ("What color?", "what colour"),
        ("Yes, there is.", "yes"),
        ("No. There isn't.", "no"),
        ("yesterday", "yesterday"),  # a word that merely starts with "yes" is not a yes
        ("A small red circle on the left, and a blue square at the top.",
         "small red circle on the left and a blue square at the top"),  # only the leading article goes
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_vqa_correct_is_exact_match_after_normalisation() -> None:
    assert vqa_correct("Two.", "two")
    assert vqa_correct("2", "two")
    assert vqa_correct("The center", "centre")
    assert vqa_correct("Yes, there is a red circle.", "yes")
    assert not vqa_correct("red circle", "red")
    assert not vqa_correct("three", "two")
    assert not vqa_correct("no", "yes")
    # describe answers must match word for word
    assert vqa_correct("A small red circle on the left.", "a small red circle on the left")
    assert not vqa_correct("A small red circle on the left.", "A large red circle on the left.")


def test_accuracy_by_type_counts_and_order() -> None:
    rows = [
        {"type": "yesno", "correct": True},
        {"type": "zebra", "correct": False},
        {"type": "colour", "correct": True},
        {"type": "colour", "correct": False},
        {"type": "count", "correct": True},
        {"type": "alpha", "correct": 1},
        {"type": "colour", "correct": True},
    ]
    acc = accuracy_by_type(rows)
    assert list(acc) == ["colour", "count", "yesno", "alpha", "zebra", "overall"]
    assert acc["colour"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)}
    assert acc["zebra"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert acc["overall"] == {"n": 7, "correct": 5, "accuracy": pytest.approx(5 / 7)}


def test_accuracy_by_type_empty_and_bad_rows() -> None:
    assert accuracy_by_type([]) == {"overall": {"n": 0, "correct": 0, "accuracy": 0.0}}
    with pytest.raises(ValueError, match="'type' and 'correct'"):
        accuracy_by_type([{"type": "colour"}])
    with pytest.raises(ValueError, match="reserved"):
        accuracy_by_type([{"type": "overall", "correct": True}])


def test_ordered_types() -> None:
    types = ["overall", "b", "describe", "colour", "a", "position", "shape", "yesno", "count"]
    assert ordered_types(types) == ["colour", "shape", "count", "position", "yesno", "describe", "a", "b", "overall"]


def test_bleu4_identical_is_one_and_worse_is_lower() -> None:
    refs = {1: ["a small red circle on the left"], 2: ["a large blue square at the top"]}
    assert bleu4({1: "A small red circle on the left.", 2: "a large blue square at the top"}, refs) == pytest.approx(
        1.0, abs=1e-6)
    worse = bleu4({1: "a small blue circle on the right", 2: "a large blue square at the top"}, refs)
    worst = bleu4({1: "two shapes", 2: "a green triangle"}, refs)
    assert 0.0 <= worst < worse < 0.9


def test_bleu4_hand_computed() -> None:
    # one word of five differs at the end: precisions 4/5, 3/4, 2/3, 1/2, same length so no brevity penalty
    assert bleu4({0: "a red circle on left"}, {0: ["a red circle on top"]}) == pytest.approx(0.2 ** 0.25, abs=1e-6)
    # all n-grams right but 4 words of 5: brevity penalty exp(1 - 5/4)
    assert bleu4({0: "a red circle on"}, {0: ["a red circle on top"]}) == pytest.approx(math.exp(-0.25), abs=1e-6)
    # the closest reference length is used
    two_refs = {0: ["a red circle on top", "a red circle on"]}
    assert bleu4({0: "a red circle on"}, two_refs) == pytest.approx(1.0, abs=1e-6)
    # coco-caption does not smooth: a perfect caption too short to have 4-grams gets p4 = 1e-15 / 1e-9
    assert bleu4({0: "red circle left"}, {0: ["red circle left"]}) == pytest.approx(1e-6 ** 0.25, rel=1e-3)


def test_cider_hand_computed_and_ordering() -> None:
    refs = {1: ["small red circle on the left"], 2: ["large blue square at top"]}
    # disjoint vocabularies: every n-gram has idf log(2); identical candidates have cosine 1 for n = 1..4 -> 10
    assert cider({1: "Small red circle on the left.", 2: "large blue square at top"}, refs) == pytest.approx(10.0)

    refs = {
        1: ["a small red circle on the left", "there is a small red circle on the left"],
        2: ["a large blue square at the top", "there is a large blue square at the top"],
        3: ["a small green triangle in the centre", "a small green triangle in the middle"],
    }
    good = {
        1: "a small red circle on the left",
        2: "a large blue square at the top",
        3: "a small green triangle in the centre",
    }
    shuffled_words = {k: " ".join(reversed(v.split())) for k, v in good.items()}
    swapped_images = {1: good[2], 2: good[3], 3: good[1]}
    scores = [cider(c, refs) for c in (good, shuffled_words, swapped_images)]
    assert scores[0] > scores[1] > scores[2] >= 0.0


def test_cider_of_a_single_image_is_zero() -> None:
    # documented property of CIDEr: idf over one image is zero, so the score carries no information
    assert cider({1: "a red circle"}, {1: ["a red circle"]}) == 0.0


@pytest.mark.parametrize("metric", [bleu4, cider])
def test_caption_metrics_validate_inputs(metric) -> None:
    with pytest.raises(ValueError, match="same keys"):
        metric({1: "a", 2: "b"}, {1: ["a"], 3: ["b"]})
    with pytest.raises(ValueError, match="no candidate"):
        metric({}, {})
    with pytest.raises(ValueError, match="at least one non-empty"):
        metric({1: "a"}, {1: []})
    with pytest.raises(ValueError, match="at least one non-empty"):
        metric({1: "a"}, {1: ["..."]})
    with pytest.raises(ValueError, match="list of strings"):
        metric({1: "a red circle"}, {1: "a red circle"})
    with pytest.raises(ValueError, match="must be a string"):
        metric({1: ["a red circle"]}, {1: ["a red circle"]})


def test_caption_metrics_score_an_empty_candidate_as_zero() -> None:
    refs = {1: ["a red circle"], 2: ["a blue square"]}
    assert bleu4({1: "", 2: ""}, refs) == pytest.approx(0.0, abs=1e-6)
    assert cider({1: "", 2: ""}, refs) == 0.0


def test_caption_scorers_need_no_java_and_no_network() -> None:
    """Import and score in a fresh interpreter where sockets and subprocesses raise and java is not on PATH."""
    code = (
        "import socket, subprocess\n"
        "def boom(*a, **k): raise RuntimeError('network or subprocess used')\n"
        "socket.socket = boom; socket.create_connection = boom; subprocess.Popen = boom\n"
        "from mmphi.eval import bleu4, cider\n"
        "refs = {1: ['a red circle on the left'], 2: ['a blue square at the top']}\n"
        "cands = {1: 'a red circle on the left', 2: 'a blue square at the top'}\n"
        "print(bleu4(cands, refs), cider(cands, refs))\n"
    )
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    bleu, cid = map(float, out.stdout.split())
    assert bleu == pytest.approx(1.0, abs=1e-6) and cid > 0


def test_word_error_rate_hand_computed() -> None:
    assert word_error_rate(["what colour is the circle"], ["what colour is a circle"]) == pytest.approx(0.2)
    assert word_error_rate(["how many shapes there"], ["how many circles there"]) == pytest.approx(0.25)
    # corpus WER pools errors over all reference words: 1 substitution + 1 deletion over 4 + 2 words
    assert word_error_rate(["is there a circle", "red square"], ["is there the circle", "red"]) == pytest.approx(2 / 6)
    # insertions can push it above 1
    assert word_error_rate(["yes"], ["yes yes yes"]) == pytest.approx(2.0)
    assert word_error_rate(["a b"], [""]) == pytest.approx(1.0)


def test_word_error_rate_ignores_case_punctuation_and_spelling() -> None:
    uk, us = "What colour is the shape in the centre?", "what color is the shape in the center"
    assert word_error_rate([uk], [us]) == 0.0
    assert word_error_rate(["How many shapes are there? Two."], ["how many shapes are there 2"]) == 0.0


def test_word_error_rate_validates() -> None:
    with pytest.raises(ValueError, match="no references"):
        word_error_rate([], [])
    with pytest.raises(ValueError, match="2 references but 1"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        word_error_rate(["..."], ["a"])
    with pytest.raises(ValueError, match="single string"):
        word_error_rate("a b", "a c")


def test_perplexity() -> None:
    assert perplexity(0.0, 5) == 1.0
    assert perplexity(10 * math.log(4.0), 10) == pytest.approx(4.0)
    assert perplexity(1e6, 1) == math.inf
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n_tokens"):
            perplexity(1.0, bad)
    with pytest.raises(ValueError, match="nll_sum"):
        perplexity(float("nan"), 3)


def test_accuracy_by_objects_groups_rows_by_the_scene_they_ask_about(tmp_path) -> None:
    from mmphi.common.questions import accuracy_by_objects

    scenes = [{"file_name": "a.png", "objects": [{}]}, {"file_name": "b.png", "objects": [{}, {}, {}]},
              {"file_name": "c.png", "objects": [{}, {}, {}]}]
    path = tmp_path / "scenes.json"
    path.write_text(json.dumps(scenes))
    rows = [{"image": "a.png", "type": "colour", "correct": True},
            {"image": "b.png", "type": "colour", "correct": False},
            {"image": "c.png", "type": "colour", "correct": True},
            {"image": "c.png", "type": "count", "correct": True},
            {"image": "unknown.png", "type": "count", "correct": True}]  # not in the file: left out
    out = accuracy_by_objects(rows, path)
    assert list(out) == ["1 object", "3 objects"]
    assert out["1 object"]["colour"] == {"n": 1, "correct": 1, "accuracy": 1.0}
    assert out["3 objects"]["colour"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert out["3 objects"]["overall"]["n"] == 3


def test_position_by_naming_reads_the_naming_from_the_scene_s_own_words(tmp_path) -> None:
    from mmphi.common.questions import position_by_naming
    from mmphi.eval.report import naming_line, naming_section

    two = [{"colour": "red", "shape": "square"}, {"colour": "blue", "shape": "circle"}]
    path = tmp_path / "scenes.json"
    path.write_text(json.dumps([{"file_name": "a.png", "objects": two},
                                {"file_name": "b.png", "objects": [{"colour": "red", "shape": "circle"}]}]))
    rows = [{"image": "a.png", "type": "position", "question": "Where is the red shape?", "correct": True},
            {"image": "a.png", "type": "position", "question": "Where is the circle located?", "correct": False},
            {"image": "a.png", "type": "position", "question": "Where is the Blue circle?", "correct": False},
            {"image": "b.png", "type": "position", "question": "In which part of the image is the red circle?",
             "correct": True},
            {"image": "a.png", "type": "colour", "question": "What colour is the circle?", "correct": True},
            {"image": "unknown.png", "type": "position", "question": "Where is the circle?", "correct": True}]
    out = position_by_naming(rows, path)
    assert list(out) == ["1 object", "2 objects"]
    assert out["2 objects"]["by colour"] == {"n": 1, "correct": 1, "accuracy": 1.0}
    assert out["2 objects"]["by shape"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    assert out["2 objects"]["by colour and shape"]["n"] == 1 and out["2 objects"]["overall"]["n"] == 3
    assert list(out["1 object"]) == ["by colour and shape", "overall"]
    table = "\n".join(naming_section({"condition": "typed", "by_objects": out}))
    assert "| by shape            |           – |   0.0 (n=1) |" in table
    assert naming_line({"condition": "typed", "by_objects": out}) == (
        "Position questions (typed) by how they name the object: by colour 100.0% (n=1; 2 objects: 100.0%, n=1), "
        "by colour and shape 50.0% (n=2; 2 objects: 0.0%, n=1), by shape 0.0% (n=1; 2 objects: 0.0%, n=1).")
