"""``mmphi eval`` end to end on a tiny random model: every section is computed and reported."""

from __future__ import annotations

import json

from PIL import Image

from mmphi.cli import main


def test_eval_writes_results_tables_and_charts(tiny_mm_dir, small_world, tmp_path):
    out = tmp_path / "report"
    code = main(["eval", "--model", str(tiny_mm_dir), "--data", str(small_world / "test"), "--out", str(out),
                 "--captions", "4", "--examples", "2"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    n_questions = res["vqa"]["typed"]["overall"]["n"]
    assert n_questions > 0 and res["vqa"]["blind"]["overall"]["n"] == n_questions
    assert res["vqa"]["spoken"]["overall"]["n"] == 4 and 0 <= res["asr"]["wer"] <= 1.5
    assert res["vqa"]["typed (same questions as spoken)"]["overall"]["n"] == 4
    assert res["captions"]["n"] == 4 and res["captions"]["bleu4"] >= 0
    assert res["perplexity"]["perplexity"] > 1 and res["perplexity"]["tokens"] > 0
    scenes = json.loads((small_world / "test" / "scenes.json").read_text())
    names = [f"{n} object{'s' if n > 1 else ''}" for n in sorted({len(s["objects"]) for s in scenes})]
    by_objects = res["vqa_by_objects"]
    assert list(by_objects) == [name for name in names if name in by_objects]  # in order, only real counts
    assert sum(acc["overall"]["n"] for acc in by_objects.values()) == n_questions
    assert sum(acc["overall"]["correct"] for acc in by_objects.values()) == res["vqa"]["typed"]["overall"]["correct"]
    naming = res["position_by_naming"]  # the same position questions, grouped by how they name the object
    condition = "typed, after describing" if "typed, after describing" in res["vqa"] else "typed"
    assert naming["condition"] == condition
    assert sum(c["overall"]["n"] for c in naming["by_objects"].values()) == res["vqa"][condition]["position"]["n"]
    md = (out / "results.md").read_text()
    assert "### Position questions by how they name the object" in md
    for section in ("Visual question answering", "Speech", "Captions", "Language model", "Examples"):
        assert f"## {section}" in md
    assert "### By the number of objects in the scene" in md
    for chart in ("vqa.png", "speech.png", "captions.png"):
        with Image.open(out / chart) as im:
            assert im.size[0] > 200
    assert len(list((out / "examples").iterdir())) == 2


def test_eval_of_a_plain_lm_reports_text_qa_and_perplexity(small_world, tmp_path):
    from helpers import make_lm

    lm = make_lm(tmp_path / "lm")
    assert main(["eval", "--model", str(lm), "--data", str(small_world / "val"), "--out", str(tmp_path / "r"),
                 "--limit", "10"]) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["text_qa"]["accuracy"]["overall"]["n"] == 10 and "perplexity" in res
    by_objects = res["text_qa"]["by_objects"]  # the split is a shapes world: split by objects too
    assert sum(acc["overall"]["n"] for acc in by_objects.values()) == 10
    md = (tmp_path / "r" / "results.md").read_text()
    assert by_objects and all(name in md for name in by_objects)  # a column per number of objects


def test_eval_on_a_folder_that_is_not_a_split_is_a_clear_error(tiny_mm_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_mm_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no instruct.json" in capsys.readouterr().err


def test_eval_survives_a_scenes_file_it_cannot_read(tiny_mm_dir, small_world, tmp_path, capsys):
    import shutil

    split = tmp_path / "test"
    shutil.copytree(small_world / "test", split)
    (split / "scenes.json").write_text('[{"no": "objects here"}]')
    out = tmp_path / "report"
    code = main(["eval", "--model", str(tiny_mm_dir), "--data", str(split), "--out", str(out),
                 "--captions", "0", "--no-spoken", "--examples", "0"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["vqa"]["typed"]["overall"]["n"] > 0 and "vqa_by_objects" not in res
    assert "not a shapes world's scenes file" in capsys.readouterr().err


def test_spoken_questions_put_the_image_where_their_typed_twins_do(tiny_mm_dir, small_world, tmp_path, monkeypatch):
    import mmphi.eval.run as run

    asked: dict[str, list[dict]] = {}
    real = run.answer_questions

    def recording(model, tok, enc, items, images, with_image, desc, *args, **kwargs):
        asked[desc] = list(items)
        return real(model, tok, enc, items, images, with_image, desc, *args, **kwargs)

    monkeypatch.setattr(run, "answer_questions", recording)
    assert main(["eval", "--model", str(tiny_mm_dir), "--data", str(small_world / "test"), "--out",
                 str(tmp_path / "e"), "--captions", "0", "--examples", "0"]) == 0
    typed = {(it["record"], it["question"]): it["at_end"] for it in asked["vqa typed"]}
    spoken = [(typed[(it["record"], it["spoken"])], it["at_end"]) for it in asked["vqa spoken"]]
    assert len(spoken) == 4 and any(t for t, _ in spoken)  # this world has questions asked before the image
    assert all(t == s for t, s in spoken)


def test_describe_first_asks_each_question_after_the_models_own_description(tiny_mm_dir, small_world, tmp_path):
    from mmphi.chat import DESCRIBE
    from mmphi.eval.run import _Images
    from mmphi.mm.data import ChatEncoder
    from mmphi.mm.loading import load_multimodal
    from mmphi.mm.vqa import answer_questions, single_questions

    model, tok = load_multimodal(tiny_mm_dir)
    enc = ChatEncoder(tok, model.image_tokens, "", 4096)
    items = single_questions(small_world / "test" / "instruct.json", 6)
    seen: list = []
    real = enc.encode
    enc.encode = lambda rounds, image, *rest: seen.append(rounds) or real(rounds, image, *rest)
    rows = answer_questions(model, tok, enc, items, _Images(model, small_world / "test" / "images"), True, "t",
                            describe_first=True)
    assert len(rows) == len(items) and all("description" in r for r in rows)
    asked = [r for r in seen if len(r) == 2]  # description turn, then the question
    assert [r[1][0] for r in asked] == [it["question"] for it in items]
    assert all(r[0][0].endswith(DESCRIBE) and r[0][1] == row["description"] for r, row in zip(asked, rows, strict=True))
    out = tmp_path / "report"
    assert main(["eval", "--model", str(tiny_mm_dir), "--data", str(small_world / "test"), "--out", str(out),
                 "--captions", "0", "--no-spoken", "--limit", "6", "--describe-first"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["vqa"]["typed, after describing"]["overall"]["n"] == res["vqa"]["typed"]["overall"]["n"] == 6


def test_with_describe_first_spoken_questions_and_their_typed_twins_are_both_asked_after_describing(
        tiny_mm_dir, small_world, tmp_path, monkeypatch):
    import mmphi.eval.run as run

    calls: dict[str, bool] = {}
    real = run.answer_questions

    def recording(model, tok, enc, items, images, with_image, desc, *args, **kwargs):
        calls[desc] = kwargs.get("describe_first", False)
        rows = real(model, tok, enc, items, images, with_image, desc, *args, **kwargs)
        if desc == "vqa after describing":  # mark the described twins: the typed-beside-spoken column must use them
            rows = [{**r, "correct": True} for r in rows]
        return rows

    monkeypatch.setattr(run, "answer_questions", recording)
    out = tmp_path / "e"
    assert main(["eval", "--model", str(tiny_mm_dir), "--data", str(small_world / "test"), "--out", str(out),
                 "--captions", "0", "--examples", "0", "--describe-first"]) == 0
    assert calls["vqa spoken"] is True and calls["vqa typed"] is False
    res = json.loads((out / "results.json").read_text())
    assert res["asr"]["after_describing"] is True
    assert res["vqa"]["typed (same questions as spoken)"]["overall"]["accuracy"] == 1.0
    assert "answered after the model has described the image" in (out / "results.md").read_text()
