"""Scores for what mmphi evaluates beyond exact answers: caption BLEU-4 / CIDEr-D, ASR word error rate, perplexity.

The caption and ASR metrics come from the libraries the field reports with (``pycocoevalcap`` for the
coco-caption scorers, ``jiwer`` for WER), so our numbers are comparable with published ones; this module
only normalises text and checks inputs, because those libraries fail with bare ``assert``s or silently
score the wrong thing (e.g. a reference given as one string instead of a list of strings). Exact-answer
scoring (VQA) lives in :mod:`mmphi.common.questions`, below every stage that uses it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import jiwer
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from mmphi.common.text import canonical, words

__all__ = ["bleu4", "caption_tokens", "cider", "perplexity", "word_error_rate"]


def caption_tokens(text: str) -> str:
    """Caption text as the coco-caption scorers expect it: lower-case, punctuation removed, space-separated.

    coco-caption runs the Stanford PTB tokenizer (a Java subprocess) before scoring; this is a
    pure-Python stand-in that, like it, lower-cases and drops punctuation tokens. Spellings and
    digits are left as written: caption metrics should see what the model wrote.
    """
    return " ".join(words(text))


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
    return " ".join(canonical(w) for w in words(text))


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
