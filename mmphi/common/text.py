"""Text normalisation every score shares: lower-case words without punctuation, one spelling per word.

The lowest layer: no mmphi import, so data, training, evaluation and reports can all use it.
"""

from __future__ import annotations

import re

ARTICLES = frozenset({"a", "an", "the"})
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



def words(text: str) -> list[str]:
    """Lower-case words with punctuation removed: the tokenisation every metric here shares."""
    text = _APOSTROPHES.sub("", text.lower())
    return _PUNCT.sub(" ", text).split()


def canonical(word: str) -> str:
    """One spelling per word: digits as number words, UK spelling where the world uses it."""
    if word.isdigit() and int(word) < len(_NUMBER_WORDS):
        return _NUMBER_WORDS[int(word)]
    return _SPELLING.get(word, word)

