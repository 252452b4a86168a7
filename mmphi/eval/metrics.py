"""Scores for what mmphi evaluates: VQA exact match, caption BLEU-4 / CIDEr-D, ASR word error rate, perplexity.

The caption and ASR metrics come from the libraries the field reports with (``pycocoevalcap`` for the
coco-caption scorers, ``jiwer`` for WER), so our numbers are comparable with published ones; this module
only normalises text and checks inputs, because those libraries fail with bare ``assert``s or silently
score the wrong thing (e.g. a reference given as one string instead of a list of strings).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence

import jiwer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from mmphi.world.language import QUESTION_TYPES

__all__ = [
    "accuracy_by_type",
    "bleu4",
    "caption_tokens",
    "cider",
    "normalize_answer",
    "ordered_types",
    "perplexity",
    "vqa_correct",
    "word_error_rate",
]

_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)
# US -> UK spellings of the words the shapes world uses (it writes "colour", "centre", "grey").
# A model, or Whisper transcribing a spoken question, may well write the US form; that is not an error.
_SPELLING = {
    "center": "centre",
    "centered": "centred",
    "color": "colour",
    "colors": "colours",
    "colored": "coloured",
    "colorful": "colourful",
    "gray": "grey",
}
# Apostrophes are deleted ("it's" -> "its") rather than split, so contractions stay one word;
# every other non-word character separates words ("left-hand" -> "left hand").
_APOSTROPHES = re.compile(r"['\u2019]")
_PUNCT = re.compile(r"[^\w\s]|_")


def _words(text: str) -> list[str]:
    """Lower-case words with punctuation removed: the tokenisation every metric here shares."""
    text = _APOSTROPHES.sub("", text.lower())
    return _PUNCT.sub(" ", text).split()


def _canonical(word: str) -> str:
    """One spelling per word: digits as number words, UK spelling where the world uses it."""
    if word.isdigit() and int(word) < len(_NUMBER_WORDS):
        return _NUMBER_WORDS[int(word)]
    return _SPELLING.get(word, word)


def normalize_answer(text: str) -> str:
    """The canonical form of a short answer, so "The Centre." and "centre" compare equal.

    Lower-cases, removes punctuation and surrounding whitespace, writes small numbers as words
    ("2" -> "two"), maps US spellings to the world's UK ones ("center" -> "centre"), reduces a reply
    that starts with yes/no to that word ("Yes, there is." -> "yes") and drops leading articles
    ("a circle" -> "circle"). Sentences keep all their other words, so "describe" answers still
    have to match word for word.
    """
    words = [_canonical(w) for w in _words(text)]
    if words and words[0] in ("yes", "no"):
        return words[0]
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def vqa_correct(prediction: str, answer: str) -> bool:
    """Exact match after :func:`normalize_answer`: the world's answers are unambiguous, so no partial credit."""
    return normalize_answer(prediction) == normalize_answer(answer)


def ordered_types(types: Iterable[str]) -> list[str]:
    """Question types in report order: the world's types first, then others alphabetically, "overall" last.

    A fixed order keeps tables from different runs comparable line by line.
    """
    known = {t: i for i, t in enumerate(QUESTION_TYPES)}
    unique = set(types)
    has_overall = "overall" in unique
    unique.discard("overall")
    out = sorted(unique, key=lambda t: (0, known[t], "") if t in known else (1, 0, t))
    return [*out, "overall"] if has_overall else out


def _cell(n: int, correct: int) -> dict[str, float]:
    # 0/0 is reported as 0.0 (not NaN) so results.json stays valid strict JSON; "n" shows it is empty.
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0}


def accuracy_by_type(rows: Iterable[Mapping]) -> dict[str, dict[str, float]]:
    """Accuracy per question type plus "overall", from rows carrying ``"type"`` and ``"correct"``.

    Returns ``{type: {"n": int, "correct": int, "accuracy": float in 0..1}}`` in :func:`ordered_types`
    order; "overall" is always present (n=0 when there are no rows).
    """
    counts: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if "type" not in row or "correct" not in row:
            raise ValueError(f"row {i} needs 'type' and 'correct' keys, got {sorted(row)}")
        kind = str(row["type"])
        if kind == "overall":
            raise ValueError(f"row {i}: 'overall' is reserved for the total and cannot be a question type")
        tally = counts.setdefault(kind, [0, 0])
        tally[0] += 1
        tally[1] += int(bool(row["correct"]))
    out = {kind: _cell(*counts[kind]) for kind in ordered_types(counts)}
    out["overall"] = _cell(sum(n for n, _ in counts.values()), sum(c for _, c in counts.values()))
    return out


def caption_tokens(text: str) -> str:
    """Caption text as the coco-caption scorers expect it: lower-case, punctuation removed, space-separated.

    coco-caption runs the Stanford PTB tokenizer (a Java subprocess) before scoring; this is a
    pure-Python stand-in that, like it, lower-cases and drops punctuation tokens. Spellings and
    digits are left as written: caption metrics should see what the model wrote.
    """
    return " ".join(_words(text))


def _caption_inputs(
    candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """Check and tokenise caption inputs into the ``{key: [str, ...]}`` dicts pycocoevalcap takes."""
    if not candidates:
        raise ValueError("no candidate captions to score")
    missing = [k for k in candidates if k not in references]
    extra = [k for k in references if k not in candidates]
    if missing or extra:
        raise ValueError(
            "candidates and references must have the same keys: "
            f"{len(missing)} without references (e.g. {missing[:3]}), "
            f"{len(extra)} without a candidate (e.g. {extra[:3]})"
        )
    res: dict[Hashable, list[str]] = {}
    gts: dict[Hashable, list[str]] = {}
    for key, cand in candidates.items():
        refs = references[key]
        if not isinstance(cand, str):
            raise ValueError(f"candidate for {key!r} must be a string, got {type(cand).__name__}")
        # A bare string is a Sequence[str] too: it would be scored as a list of one-letter references.
        if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references for {key!r} must be a list of strings, got {refs!r:.80}")
        toks = [caption_tokens(r) for r in refs]
        toks = [t for t in toks if t]
        if not toks:
            raise ValueError(f"references for {key!r} must hold at least one non-empty caption, got {list(refs)!r:.80}")
        res[key] = [caption_tokens(cand)]
        gts[key] = toks
    return res, gts


def bleu4(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    """Corpus BLEU-4 in 0..1, as coco-caption computes it (closest reference length for the brevity penalty).

    ``candidates`` maps an image key to the generated caption, ``references`` the same keys to
    one or more ground-truth captions. Raises ValueError on mismatched keys or missing references.
    """
    res, gts = _caption_inputs(candidates, references)
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(scores[3])


def cider(candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> float:
    """Corpus CIDEr-D as coco-caption computes it (reported by COCO as "CIDEr"; 0..10, typically 0..~2).

    Its n-gram weights are IDF over the references of the whole set, so it is only meaningful over
    many images: with a single image every n-gram has zero IDF and the score is 0.
    """
    res, gts = _caption_inputs(candidates, references)
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def _asr_text(text: str) -> str:
    """ASR text for WER: case, punctuation, digits and US/UK spelling are not recognition errors."""
    return " ".join(_canonical(w) for w in _words(text))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: (substitutions + deletions + insertions) over all reference words, via jiwer.

    Both sides are normalised first (lower-case, no punctuation, small numbers as words, UK
    spelling), as Whisper's own evaluation does, so "Colour?" vs "color" is not counted as an error.
    Can exceed 1 when the hypotheses insert many words.
    """
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise ValueError("references and hypotheses must be sequences of strings, not a single string")
    if len(references) == 0:
        raise ValueError("no references to score")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [_asr_text(r) for r in references]
    hyps = [_asr_text(h) for h in hypotheses]
    if not any(refs):
        raise ValueError("all references are empty after normalisation; WER is undefined")
    return float(jiwer.wer(refs, hyps))


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per token), from a summed NLL so batches can be accumulated exactly.

    Returns ``inf`` rather than overflowing for a hopeless model.
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    if math.isnan(nll_sum) or nll_sum < 0:
        raise ValueError(f"nll_sum must be a non-negative number, got {nll_sum}")
    mean = nll_sum / n_tokens
    return math.exp(mean) if mean < 709.0 else math.inf
