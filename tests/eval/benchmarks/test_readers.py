"""Each reader on a hand-made folder in its official layout, and its errors on a broken one."""

from __future__ import annotations

import json
import typing

import pytest

from mmphi.eval.benchmarks import BENCHMARKS, BenchmarkError
from mmphi.eval.config import EvalConfig

SUFFIX = "\nAnswer the question using a single word or phrase."


def test_the_settings_offer_every_benchmark():
    choices = typing.get_args(typing.get_type_hints(EvalConfig)["benchmark"])
    assert set(choices) == {"", *BENCHMARKS}


def test_vqav2_joins_questions_and_annotations(benchmark_dir):
    root = benchmark_dir("vqav2")
    items = BENCHMARKS["vqav2"].read(root, "val2014", None, 0)
    assert [it.qid for it in items] == ["1", "2", "3", "4"]
    assert items[1].question == "How many dogs are there?" + SUFFIX
    assert items[1].image == root / "val2014" / "COCO_val2014_000000000042.jpg"
    assert items[1].reference == ["2"] * 3 + ["3"] * 7
    assert items[1].groups == {"answer type": "number", "question type": "how many"}
    assert len(BENCHMARKS["vqav2"].read(root, "val2014", None, 2)) == 2


def test_textvqa_reads_its_data_list(benchmark_dir):
    root = benchmark_dir("textvqa")
    items = BENCHMARKS["textvqa"].read(root, "val", None, 0)
    assert [it.qid for it in items] == ["11", "12", "13", "14"]
    assert items[0].image == root / "train_images" / "a1.jpg" and items[0].question == "What brand is it?" + SUFFIX


def test_gqa_keeps_balanced_questions_with_their_types(benchmark_dir):
    root = benchmark_dir("gqa")
    items = BENCHMARKS["gqa"].read(root, "testdev_balanced", None, 0)
    assert [it.qid for it in items] == ["201", "202", "203", "204"]  # 205 is not balanced
    assert items[1].groups == {"answer kind": "open", "structural type": "query", "semantic type": "rel"}
    assert items[3].groups["answer kind"] == "binary" and items[0].image == root / "images" / "n1.jpg"


def test_pope_reads_each_split_with_its_own_limit(benchmark_dir):
    root = benchmark_dir("pope")
    items = BENCHMARKS["pope"].read(root, "random,popular,adversarial", None, 3)
    assert [it.qid for it in items][:4] == ["random/1", "random/2", "random/3", "popular/1"] and len(items) == 9
    assert items[0].reference == "yes" and items[0].question == "Is there a thing0 in the image?" + SUFFIX
    assert [it.groups["split"] for it in BENCHMARKS["pope"].read(root, "adversarial", None, 0)] == ["adversarial"] * 4


def test_scienceqa_asks_test_problems_with_an_image_in_llava_form(benchmark_dir):
    root = benchmark_dir("sqa")
    items = BENCHMARKS["sqa"].read(root, "test", None, 0)
    assert [it.qid for it in items] == ["5", "6", "8", "9"]  # 7 has no image; 10 is a train problem
    assert items[1].question == ("Context: Look at the map.\nWhich state is farthest north?\nA. Ohio\nB. Texas\n"
                                 "C. Maine\nAnswer with the option's letter from the given choices directly.")
    assert items[0].question.startswith("Which is a mammal?\nA. frog\nB. whale\n")  # no hint: no context line
    assert items[1].reference == {"letter": "C", "choices": 3} and items[1].groups == {"subject": "social science"}
    assert items[0].image == root / "images" / "test" / "5" / "image.png"


def test_an_images_folder_can_be_given(benchmark_dir, tmp_path):
    root = benchmark_dir("gqa")
    (root / "images").rename(tmp_path / "elsewhere")
    with pytest.raises(BenchmarkError, match=r"4 of 4 images are missing .*--benchmark-images"):
        BENCHMARKS["gqa"].read(root, "testdev_balanced", None, 0)
    assert len(BENCHMARKS["gqa"].read(root, "testdev_balanced", tmp_path / "elsewhere", 0)) == 4


@pytest.mark.parametrize(("name", "split", "message"), [
    ("vqav2", "test2015", "v2_OpenEnded_mscoco_test2015_questions.json not found"),
    ("textvqa", "test", "TextVQA_0.5.1_test.json not found"),
    ("gqa", "val_balanced", "val_balanced_questions.json not found"),
    ("pope", "random,hard", "coco_pope_hard.json not found: an official POPE file"),
    ("sqa", "minival", "pid_splits.json has no 'minival'"),
])
def test_a_missing_file_or_split_is_named(benchmark_dir, name, split, message):
    with pytest.raises(BenchmarkError, match=message):
        BENCHMARKS[name].read(benchmark_dir(name), split, None, 0)


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_missing_key_names_the_file_record_and_key(benchmark_dir):
    root = benchmark_dir("vqav2")
    _edit(root / "v2_mscoco_val2014_annotations.json", lambda d: d["annotations"][2].pop("answer_type"))
    with pytest.raises(BenchmarkError, match=r"annotations.json annotation 2 has no 'answer_type'"):
        BENCHMARKS["vqav2"].read(root, "val2014", None, 0)
    _edit(root / "v2_OpenEnded_mscoco_val2014_questions.json", lambda d: d.pop("questions"))
    with pytest.raises(BenchmarkError, match=r"questions.json has no 'questions' \(keys: data_subtype"):
        BENCHMARKS["vqav2"].read(root, "val2014", None, 0)

    gqa = benchmark_dir("gqa")
    _edit(gqa / "testdev_balanced_questions.json", lambda d: d["203"].pop("imageId"))
    with pytest.raises(BenchmarkError, match="question 203 has no 'imageId'"):
        BENCHMARKS["gqa"].read(gqa, "testdev_balanced", None, 0)

    sqa = benchmark_dir("sqa")
    _edit(sqa / "problems.json", lambda d: d["8"].update(answer=7))
    with pytest.raises(BenchmarkError, match="problem 8: 'answer' must index its 4 choices"):
        BENCHMARKS["sqa"].read(sqa, "test", None, 0)

    text = benchmark_dir("textvqa")
    _edit(text / "TextVQA_0.5.1_val.json", lambda d: d["data"][1].pop("answers"))
    with pytest.raises(BenchmarkError, match="entry 1 has no 'answers'"):
        BENCHMARKS["textvqa"].read(text, "val", None, 0)


def test_a_bad_pope_line_is_named(benchmark_dir):
    root = benchmark_dir("pope")
    path = root / "coco_pope_popular.json"
    path.write_text(path.read_text().replace('"label": "no"', '"label": "maybe"'))
    with pytest.raises(BenchmarkError, match=r"coco_pope_popular.json line 4: label must be 'yes' or 'no'"):
        BENCHMARKS["pope"].read(root, "popular", None, 0)
    path.write_text("{not json\n")
    with pytest.raises(BenchmarkError, match=r"coco_pope_popular.json:1 is not a JSON object"):
        BENCHMARKS["pope"].read(root, "popular", None, 0)
