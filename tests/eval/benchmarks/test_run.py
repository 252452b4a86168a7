"""``mmphi eval --benchmark NAME`` end to end on the tiny random model, and its scores on fixed answers."""

from __future__ import annotations

import json

import pytest

from mmphi.cli import main
from mmphi.eval.benchmarks import BENCHMARKS

N_QUESTIONS = {"vqav2": 4, "textvqa": 4, "gqa": 4, "pope": 12, "sqa": 4}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_eval_answers_a_benchmark_and_writes_its_report(tiny_mm_dir, benchmark_dir, tmp_path, name):
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tiny_mm_dir), "--benchmark", name, "--benchmark-dir",
                 str(benchmark_dir(name)), "--out", str(out), "--examples", "2"]) == 0
    res = json.loads((out / "results.json").read_text())
    b = res["benchmark"]
    assert b["name"] == name and b["split"] == BENCHMARKS[name].default_split and b["n"] == N_QUESTIONS[name]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == N_QUESTIONS[name] and len(res["examples"]) == 2
    for condition, key in (("image", ""), ("blind", "blind_")):
        assert b[condition]["overall"]["n"] == len(rows) and b[condition]["too_long"] == 0
        assert all(isinstance(r[f"{key}prediction"], str) and 0 <= r[f"{key}score"] <= 1 for r in rows)
        if name != "pope":  # POPE's overall figures are the means over its splits
            mean = sum(r[f"{key}score"] for r in rows) / len(rows)
            assert b[condition]["overall"]["accuracy"] == pytest.approx(mean)
    md = (out / "results.md").read_text()
    assert f"## {BENCHMARKS[name].title} (" in md and "accuracy, blind" in md and "## Examples" in md


def _fixed_answers(monkeypatch, answers: list[str], blind: str = "yes"):
    import mmphi.eval.benchmarks.run as run

    def ask(model, tok, items, with_image, *args):
        assert len(items) == len(answers)
        return (answers if with_image else [blind] * len(items)), 0

    monkeypatch.setattr(run, "ask", ask)


def _run(tiny_mm_dir, root, name, tmp_path) -> dict:
    out = tmp_path / f"out-{name}"
    assert main(["eval", "--model", str(tiny_mm_dir), "--benchmark", name, "--benchmark-dir", str(root),
                 "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())["benchmark"]


def test_vqa_family_scores_on_fixed_answers(tiny_mm_dir, benchmark_dir, tmp_path, monkeypatch):
    _fixed_answers(monkeypatch, ["Yes", "two", "dog", "Red."])
    b = _run(tiny_mm_dir, benchmark_dir("vqav2"), "vqav2", tmp_path)
    # 10/10 agree -> 1; "two" = "2" (3 of 10) -> 0.9; "dog" = "a dog" (2 of 10) -> 0.6; "red" (4 of 10) -> 1
    assert b["image"]["overall"]["accuracy"] == pytest.approx((1 + 0.9 + 0.6 + 1) / 4)
    by_type = b["image"]["by"]["answer type"]
    assert by_type["yes/no"]["accuracy"] == 1 and by_type["number"]["accuracy"] == pytest.approx(0.9)
    assert by_type["other"] == {"accuracy": pytest.approx(0.8), "n": 2}
    assert b["blind"]["overall"]["accuracy"] == pytest.approx(0.25)  # "yes" is right on the yes/no question only

    _fixed_answers(monkeypatch, ["Nokia", "10", "stop", "Coca-Cola"])
    b = _run(tiny_mm_dir, benchmark_dir("textvqa"), "textvqa", tmp_path)
    # "Nokia." is "nokia" -> 10 of 10; "ten" is "10" -> 3 of 10; "stop" 2 of 10; "coca-cola" is "coca cola"
    assert b["image"]["overall"]["accuracy"] == pytest.approx((1 + 0.9 + 0.6 + 1) / 4)


def test_gqa_pope_and_scienceqa_scores_on_fixed_answers(tiny_mm_dir, benchmark_dir, tmp_path, monkeypatch):
    _fixed_answers(monkeypatch, ["Yes.", "the cup", "man", "Dog"])
    b = _run(tiny_mm_dir, benchmark_dir("gqa"), "gqa", tmp_path)["image"]
    assert b["overall"]["accuracy"] == 0.75  # "the cup" is not "cup": exact match
    assert b["by"]["answer kind"] == {"binary": {"accuracy": 1.0, "n": 2}, "open": {"accuracy": 0.5, "n": 2}}

    _fixed_answers(monkeypatch, ["Yes", "No, there is not.", "There is no thing.", "yes",  # random: yes no yes no
                                 "Yes.", "Yes", "I do not see one", "Yes",                 # popular: yes yes yes no
                                 "No", "no", "Yes", "No."])                                # adversarial: no no yes no
    b = _run(tiny_mm_dir, benchmark_dir("pope"), "pope", tmp_path)
    splits = b["image"]["by"]["split"]
    assert {k: splits["random"][k] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")} == \
        {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5}
    assert splits["popular"]["f1"] == pytest.approx(2 / 3) and splits["popular"]["yes_ratio"] == 0.75
    assert splits["adversarial"]["accuracy"] == 1.0 and splits["adversarial"]["yes_ratio"] == 0.25
    assert b["image"]["overall"]["f1"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert b["image"]["overall"]["n"] == 12
    assert b["blind"]["by"]["split"]["random"]["recall"] == 1.0 and b["blind"]["overall"]["yes_ratio"] == 1.0

    _fixed_answers(monkeypatch, ["B", "C. Maine", "The answer is A.", "E"])
    b = _run(tiny_mm_dir, benchmark_dir("sqa"), "sqa", tmp_path)["image"]
    assert b["overall"]["accuracy"] == 0.5  # right, right, the wrong letter, no option of 2
    assert b["by"]["subject"] == {"natural science": {"accuracy": 0.5, "n": 2},
                                  "social science": {"accuracy": 1.0, "n": 1},
                                  "language science": {"accuracy": 0.0, "n": 1}}


def test_a_question_longer_than_the_context_counts_wrong(tiny_mm_dir, benchmark_dir, tmp_path):
    root = benchmark_dir("gqa")
    path = root / "testdev_balanced_questions.json"
    questions = json.loads(path.read_text())
    questions["202"]["question"] = "Is it " + "very " * 150 + "red?"  # the tiny LM has 128 positions
    path.write_text(json.dumps(questions))
    b = _run(tiny_mm_dir, root, "gqa", tmp_path)
    assert b["image"]["too_long"] == b["blind"]["too_long"] == 1 and b["image"]["overall"]["n"] == 4
    rows = [json.loads(x) for x in (tmp_path / "out-gqa" / "predictions.jsonl").read_text().splitlines()]
    assert rows[1]["prediction"] == "" and rows[1]["score"] == 0.0
    assert "longer than the model's context" in (tmp_path / "out-gqa" / "results.md").read_text()


def test_benchmark_settings_errors_are_clear(tiny_mm_dir, benchmark_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_mm_dir), "--benchmark", "gqa"]) == 2
    assert "--benchmark needs --benchmark-dir" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_mm_dir), "--benchmark", "mme", "--benchmark-dir", "x"]) == 2
    assert "'mme' is not one of" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_mm_dir), "--benchmark", "gqa", "--benchmark-dir", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 1
    assert "testdev_balanced_questions.json not found" in capsys.readouterr().err
    from helpers import make_lm

    assert main(["eval", "--model", str(make_lm(tmp_path / "lm")), "--benchmark", "sqa", "--benchmark-dir",
                 str(benchmark_dir("sqa")), "--out", str(tmp_path / "o")]) == 1
    assert "not a multimodal model folder" in capsys.readouterr().err


def test_references_in_the_report_are_short():
    from mmphi.eval.benchmarks.report import reference_text

    assert reference_text(["2"] * 3 + ["3"] * 7) == "3 ×7, 2 ×3"
    assert reference_text(["nokia", "Nokia."]) == "nokia, Nokia."
    assert reference_text({"letter": "C", "choices": 3}) == "C" and reference_text("yes") == "yes"
