"""Answer normalisation and soft accuracy of the VQA family (VQAv2, TextVQA), as their official evaluations do.

Two normalisers, because the two official pipelines differ in small ways:

* :func:`vqa_normalize` is the VQA challenge's ``vqaEval.py`` (GT-Vision-Lab/VQA): punctuation removed or
  turned into spaces, periods dropped unless a digit follows, number words "zero".."ten" (and "none")
  written as digits, articles dropped, and apostrophe-less contractions restored ("dont" -> "don't").
* :func:`evalai_answer` is EvalAI's answer processor (the one LLaVA applies to its VQAv2 answers before
  submission and m4c's TextVQA evaluator applies to predictions and references alike): first lower-case,
  "," and "?" removed, "'s" split off as a word (" 's"), then the same steps as above.

:func:`soft_accuracy` is the VQA accuracy: ``min(1, #annotators who gave the answer / 3)``, averaged over the
10 subsets of 9 annotators that leave one out. Written from the published rules, not copied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["CONTRACTIONS", "evalai_answer", "soft_accuracy", "vqa_normalize", "vqa_soft_score"]

# The contractions the official table restores. Each form is restored from every spelling that lacks exactly
# one of its apostrophes ("couldn't've" from "couldnt've" and "couldn'tve", not from "couldntve"), which
# reproduces the official table entry for entry. Capitalised forms never match (the words are lower-cased
# first), as in the official code.
_CONTRACTED_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd
he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've
mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've
somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've
something'll that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't
we'd've we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll
who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've
you'll you're you've
"""


def _without_one_apostrophe(form: str) -> list[str]:
    return [form[:i] + form[i + 1:] for i, ch in enumerate(form) if ch == "'"]


CONTRACTIONS: dict[str, str] = {bare: form for form in _CONTRACTED_FORMS.split()
                                for bare in _without_one_apostrophe(form)}
# Three entries of the official table that the rule above does not give: two that map a word to itself, and
# one that runs backwards ("somebody'd" -> "somebodyd"). Kept, so that scores match the official ones.
CONTRACTIONS.update({"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"})

NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
               ",", "?", "!")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a look-ahead (a typo for a look-behind)
# that always holds at a period, so what it removes is every period not followed by a digit ("2.5" stays).
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_VQA = re.compile(r"\d,\d")  # vqaEval.py: a comma between digits ("1,000")
_DIGIT_COMMA_EVALAI = re.compile(r"(?<=\d),+(?=\d)")  # EvalAI's variant (never matches: "," is gone by then)


def _punctuation(text: str, digit_comma: re.Pattern[str]) -> str:
    """Each punctuation mark is deleted where it touches a space (or the text has a digit comma), else spaced."""
    glued = digit_comma.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The official code tests the *input* text for each mark, while it edits a copy.
        out = out.replace(mark, "" if glued or f"{mark} " in text or f" {mark}" in text else " ")
    return _PERIOD.sub("", out)


def _digits_articles(text: str) -> str:
    """Lower-case words; number words as digits; articles dropped; contractions restored."""
    kept = [NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in kept if w not in ARTICLES)


def vqa_normalize(text: str) -> str:
    """An answer as vqaEval.py compares it: "Two dogs!" -> "2 dogs", "a dog" -> "dog", "dont" -> "don't"."""
    return _digits_articles(_punctuation(text, _DIGIT_COMMA_VQA))


def evalai_answer(text: str) -> str:
    """An answer as EvalAI's processor writes it: "It's Ten." -> "it 's 10", "1,000" -> "1000"."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(_punctuation(text, _DIGIT_COMMA_EVALAI))


def soft_accuracy(answer: str, references: Sequence[str]) -> float:
    """Mean over leave-one-annotator-out subsets of min(1, matches / 3); strings compared as given.

    With 10 references: 1 match -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0.
    """
    if isinstance(references, str) or not references:
        raise ValueError(f"references must be a non-empty list of answers, got {references!r:.80}")
    matches = sum(r == answer for r in references)
    n = len(references)
    # Leaving out a matching annotator leaves matches - 1 of them; leaving out another leaves all of them.
    total = matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)
    return total / n


def vqa_soft_score(prediction: str, references: Sequence[str]) -> float:
    """VQAv2 accuracy of one prediction: EvalAI's processor on it, then vqaEval.py's rules.

    As in vqaEval.py, the answers are normalised only when the annotators disagree (when all agree, the
    prediction must equal their raw answer, after EvalAI's processing): a quirk of the official code that the
    published numbers include.
    """
    if isinstance(references, str):
        raise ValueError(f"references must be a non-empty list of answers, got {references!r:.80}")
    answer = evalai_answer(prediction).replace("\n", " ").replace("\t", " ").strip()
    refs = [r.replace("\n", " ").replace("\t", " ").strip() for r in references]
    if len(set(refs)) > 1:
        refs = [vqa_normalize(r) for r in refs]
        answer = vqa_normalize(answer)
    return soft_accuracy(answer, refs)
