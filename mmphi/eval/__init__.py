"""Evaluation: ``mmphi eval`` (VQA by question type, typed / spoken / blind, captions, ASR, perplexity) and
its report; caption, WER and perplexity scores; public benchmarks (VQAv2, GQA, POPE, ScienceQA-IMG, TextVQA)
in :mod:`mmphi.eval.benchmarks`. Exact-answer scoring, tables and charts are in
:mod:`mmphi.common`, below the stages that use them too."""

from mmphi.eval.metrics import bleu4, caption_tokens, cider, perplexity, word_error_rate

__all__ = ["bleu4", "caption_tokens", "cider", "perplexity", "word_error_rate"]
