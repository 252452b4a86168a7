"""The benchmarks' scoring rules on their published normalisation examples and hand-computed cases."""

from __future__ import annotations

import pytest

from mmphi.eval.benchmarks.answers import CONTRACTIONS, evalai_answer, soft_accuracy, vqa_normalize, vqa_soft_score
from mmphi.eval.benchmarks.gqa import gqa_answer
from mmphi.eval.benchmarks.pope import binary_metrics, pope_answer
from mmphi.eval.benchmarks.scienceqa import option_letter


@pytest.mark.parametrize(("raw", "normal"), [
    ("a dog", "dog"), ("The Dog", "dog"), ("an apple", "apple"),        # articles dropped, lower-cased
    ("ten", "10"), ("Two", "2"), ("none", "0"), ("10", "10"),           # number words up to ten as digits
    ("twenty two", "twenty 2"), ("eleven", "eleven"),                   # word by word, and no further
    ("dont", "don't"), ("isnt", "isn't"), ("couldnt've", "couldn't've"),  # contractions restored
    ("it's", "it's"), ("its", "its"),                                   # "its" is a word, not a contraction
    ("yes!", "yes"), ("dog.", "dog"), ("2.5", "2.5"),                   # periods go unless a digit follows
    ("x-ray", "x ray"), ("left / right", "left right"),                 # a mark inside a word becomes a space
    ("1,000", "1000"), ("(red)", "red"),
])
def test_vqa_normalisation(raw, normal):
    assert vqa_normalize(raw) == normal


def test_the_contraction_table_has_the_official_entries_and_quirks():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["hed've"] == CONTRACTIONS["he'dve"] == "he'd've" and "hedve" not in CONTRACTIONS
    assert CONTRACTIONS["twas"] == "'twas" and CONTRACTIONS["somebody'd"] == "somebodyd"
    assert "Im" in CONTRACTIONS and vqa_normalize("Im") == "im"  # capitalised keys never match (lower-cased first)


@pytest.mark.parametrize(("raw", "processed"), [
    ("It's Ten.", "it 's 10"), ("1,000", "1000"), ("What?", "what"), ("Coca-Cola", "coca cola"), ("  A  Cat ", "cat"),
])
def test_evalai_answer_processor(raw, processed):
    assert evalai_answer(raw) == processed


@pytest.mark.parametrize(("matching", "score"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_accuracy_averages_the_ten_leave_one_out_subsets(matching, score):
    # 3 of 10 match: leaving one of them out leaves 2 (2/3), leaving another out leaves 3 (1): (3*2/3 + 7)/10
    refs = ["cat"] * matching + ["dog"] * (10 - matching)
    assert soft_accuracy("cat", refs) == pytest.approx(score)


def test_vqa_score_normalises_when_annotators_disagree():
    assert vqa_soft_score("two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_soft_score("A dog.", ["dog"] * 2 + ["cat"] * 8) == pytest.approx(0.6)
    assert vqa_soft_score("22", ["twenty two"] * 5 + ["22"] * 5) == pytest.approx(1.0)
    assert vqa_soft_score("22", ["twenty two"] * 9 + ["22"]) == pytest.approx(0.3)  # "twenty 2" is not "22"
    assert vqa_soft_score("twenty-two", ["twenty two"] * 9 + ["22"]) == pytest.approx(1.0)


def test_vqa_score_with_unanimous_annotators_compares_raw_answers_like_the_official_code():
    assert vqa_soft_score("Yes.", ["yes"] * 10) == 1.0  # EvalAI's processor made the prediction "yes"
    assert vqa_soft_score("it's", ["it's"] * 10) == 0.0  # ... and "it 's": no match without normalising both
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_soft_score("x", "yes")


def test_gqa_answer_is_lower_cased_without_trailing_periods():
    assert gqa_answer("Yes.") == "yes" and gqa_answer(" Table ") == "table"
    assert gqa_answer("the table") == "the table"  # exact match: no article removal


@pytest.mark.parametrize(("reply", "parsed"), [
    ("Yes", "yes"), ("No", "no"), ("No, there is not.", "no"), ("There is no dog.", "no"),
    ("I do not see one", "no"), ("Yes. No.", "yes"),  # only the first sentence counts
    ("Nope", "yes"), ("Not at all", "yes"),  # POPE looks for the words "no", "No", "not" only
])
def test_pope_answer_parsing(reply, parsed):
    assert pope_answer(reply) == parsed


def test_pope_metrics_by_hand():
    m = binary_metrics(["yes", "yes", "yes", "no"], ["yes", "yes", "no", "yes"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 0, 1)
    assert m["accuracy"] == 0.5 and m["yes_ratio"] == 0.75
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(2 / 3)
    none = binary_metrics(["yes", "no"], ["no", "no"])  # never "yes": precision 0 (not a division by zero)
    assert none["precision"] == none["f1"] == 0.0 and none["accuracy"] == 0.5


@pytest.mark.parametrize(("reply", "letter"), [
    ("B", "B"), ("C. Maine", "C"), ("The answer is A.", "A"), ("A", "A"),
    ("D", None), ("", None), ("AB", None), ("b", None), ("B.", None),  # no option of 3, or not LLaVA's forms
    ("The answer is A. The answer is B.", None),  # said twice: undecided
])
def test_scienceqa_option_letter(reply, letter):
    assert option_letter(reply, 3) == letter

