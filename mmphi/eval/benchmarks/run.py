"""``mmphi eval --benchmark NAME``: a public benchmark answered greedily, with and without the image, and scored.

Each question is one user turn, the image first (``<image>\\n{question}\\n{instruction}``, as LLaVA-1.5's
evaluation asks), answered by the batched greedy path that validation and ``mmphi eval`` use. Writes
results.json, results.md and predictions.jsonl (every question, its reference, answers and scores).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from mmphi.errors import MmphiError
from mmphi.eval.benchmarks import BENCHMARKS
from mmphi.eval.benchmarks.common import Item
from mmphi.eval.config import EvalConfig
from mmphi.eval.report import write_report
from mmphi.mm.vqa import prompt_text

CHUNK = 512  # questions whose image features are held at once (a feature cache per chunk bounds memory)


def ask(model, tokenizer, items: Sequence[Item], with_image: bool, max_new_tokens: int, batch_size: int,
        desc: str) -> tuple[list[str], int]:
    """(greedy answers, how many questions did not fit the LM's context: those answer "")."""
    from mmphi.eval.run import _Images
    from mmphi.mm.answer import greedy_answers
    from mmphi.mm.data import ChatEncoder

    context = int(getattr(model.lm.config, "max_position_embeddings", 4096))
    enc = ChatEncoder(tokenizer, model.image_tokens, model.spec.get("system", ""), context - max_new_tokens)
    answers: list[str] = []
    too_long = 0
    for start in tqdm(range(0, len(items), CHUNK), desc=desc, unit="chunk", disable=len(items) <= CHUNK):
        chunk = items[start:start + CHUNK]
        prompts = [enc.encode([(prompt_text(it.question, with_image), None)], str(it.image) if with_image else None)
                   for it in chunk]
        fits = [p for p in prompts if p is not None]
        # Image keys are the items' paths, so the feature cache's folder is the current one.
        got = iter(greedy_answers(model, tokenizer, fits, _Images(model, Path()), max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, desc=desc) if fits else [])
        answers += ["" if p is None else next(got) for p in prompts]
        too_long += len(prompts) - len(fits)
    return answers, too_long


def run_benchmark(cfg: EvalConfig) -> dict:
    from mmphi.mm.loading import load_multimodal

    bench = BENCHMARKS[cfg.benchmark]
    folder, out = Path(cfg.benchmark_dir), Path(cfg.out)
    split = cfg.benchmark_split or bench.default_split
    start = time.perf_counter()
    items = bench.read(folder, split, Path(cfg.benchmark_images) if cfg.benchmark_images else None, cfg.limit)
    if not (Path(cfg.model) / "mmphi.json").exists():
        raise MmphiError(f"{cfg.model} is not a multimodal model folder (no mmphi.json): a benchmark needs images")
    model, tok = load_multimodal(cfg.model)
    if model.encoder is None:
        raise MmphiError(f"{cfg.model} records no vision encoder, so it cannot read the benchmark's images")
    rows = [{"question_id": it.qid, "image": str(it.image), "question": it.question, "reference": it.reference,
             **({"groups": it.groups} if it.groups else {})} for it in items]
    summary: dict = {"name": bench.name, "title": bench.title, "split": split, "n": len(items),
                     "max_new_tokens": bench.max_new_tokens}
    for condition in ("image", "blind") if cfg.benchmark_blind else ("image",):
        answers, too_long = ask(model, tok, items, condition == "image", bench.max_new_tokens, cfg.batch_size,
                                f"{bench.name} {condition}")
        summary[condition] = {**bench.summary(items, answers), "too_long": too_long}
        key = "" if condition == "image" else "blind_"
        for row, it, answer in zip(rows, items, answers, strict=True):
            row[f"{key}prediction"], row[f"{key}score"] = answer, bench.score(it, answer)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    results = {"model": cfg.model, "data": str(folder), "benchmark": summary, "examples": rows[:cfg.examples],
               "elapsed_s": round(time.perf_counter() - start, 1)}
    write_report(results, out)
    return results
