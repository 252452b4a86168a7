"""Evaluation metrics (VQA accuracy, BLEU-4, CIDEr-D, WER, perplexity) and report tables/charts."""

from mmphi.eval.metrics import (
    accuracy_by_type,
    bleu4,
    caption_tokens,
    cider,
    normalize_answer,
    ordered_types,
    perplexity,
    vqa_correct,
    word_error_rate,
)
from mmphi.eval.tables import accuracy_table, bar_chart, format_cell, line_chart, markdown_table, pct

__all__ = [
    "accuracy_by_type",
    "accuracy_table",
    "bar_chart",
    "bleu4",
    "caption_tokens",
    "cider",
    "format_cell",
    "line_chart",
    "markdown_table",
    "normalize_answer",
    "ordered_types",
    "pct",
    "perplexity",
    "vqa_correct",
    "word_error_rate",
]
