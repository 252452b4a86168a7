"""``mmphi teacher``: clean pretraining text sampled from a teacher LM (e.g. Phi-2 itself), in batches.

Prompts are sampled in parallel (one ``generate`` call per batch, left-padded), filtered for
quality (length, repetition, mostly-text) and de-duplicated, and appended to a JSONL file until
it reaches the target size. Appending makes it resumable: a rerun reads the file's documents back
for de-duplication and continues.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from tqdm import tqdm

from mmphi.lm.config import TeacherConfig
from mmphi.lm.loading import default_device, load_causal_lm
from mmphi.tokenizer import load_tokenizer

TOPICS = ("a small robot learning to paint", "how rainbows form", "a market day in a mountain village",
          "why the sky is blue", "the life cycle of a frog", "a letter to a friend about a trip",
          "how to bake bread", "the history of the bicycle", "a conversation between a cat and a dog",
          "how volcanoes work", "a day at the seaside", "what makes a good teacher")
FORMS = ("Write a short story about {}.", "Explain {} to a curious child.", "Write an essay on {}.",
         "Write a textbook paragraph about {}.")


def builtin_prompts() -> list[str]:
    return [form.format(topic) for topic in TOPICS for form in FORMS]


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def quality_problem(text: str, min_words: int, min_distinct: float) -> str | None:
    """Why a document is rejected (None = keep): too short, repetitive, or not mostly prose."""
    words = text.split()
    if len(words) < min_words:
        return "too short"
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if trigrams and len(set(trigrams)) / len(trigrams) < min_distinct:
        return "repetitive"
    letters = sum(c.isalpha() or c.isspace() for c in text)
    if letters / max(1, len(text)) < 0.7:
        return "not prose"
    return None


def _digest(text: str) -> str:
    return hashlib.blake2b(_normal(text).encode(), digest_size=12).hexdigest()


def _existing(path: Path) -> tuple[set[str], int]:
    seen: set[str] = set()
    count = 0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                seen.add(_digest(json.loads(line)["text"]))
                count += 1
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill
    return seen, count


@torch.no_grad()
def _sample(lm, tokenizer, prompts: list[str], cfg: TeacherConfig) -> list[str]:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(lm.device)
    finally:
        tokenizer.padding_side = side
    out = lm.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                      max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def teacher(cfg: TeacherConfig) -> dict:
    device = default_device() if cfg.device == "auto" else torch.device(cfg.device)
    tokenizer = load_tokenizer(cfg.model)
    lm = load_causal_lm(cfg.model, device=device).eval()
    prompts = ([p.strip() for p in Path(cfg.prompts).read_text().splitlines() if p.strip()] if cfg.prompts
               else builtin_prompts())
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen, count = _existing(out)
    target = int(cfg.target_mb * 2**20)
    torch.manual_seed(cfg.seed + count)  # a resumed run does not resample what it already wrote
    rejected: dict[str, int] = {}
    written, batches = 0, 0
    bar = tqdm(total=target, initial=min(target, out.stat().st_size if out.exists() else 0), unit="B",
               unit_scale=True, desc="teacher")
    with open(out, "a") as f:
        while (out.stat().st_size if out.exists() else 0) < target:
            if cfg.max_batches and batches >= cfg.max_batches:
                break
            batch = [prompts[(batches * cfg.batch_size + i) % len(prompts)] for i in range(cfg.batch_size)]
            for prompt, text in zip(batch, _sample(lm, tokenizer, batch, cfg), strict=True):
                problem = quality_problem(text, cfg.min_words, cfg.min_distinct)
                if problem is None and _digest(text) in seen:
                    problem = "duplicate"
                if problem:
                    rejected[problem] = rejected.get(problem, 0) + 1
                    continue
                seen.add(_digest(text))
                f.write(json.dumps({"text": text, "prompt": prompt, "model": cfg.model}) + "\n")
                written += 1
            f.flush()
            batches += 1
            bar.n = min(target, out.stat().st_size)
            bar.refresh()
    bar.close()
    return {"out": str(out), "written": written, "documents": count + written, "rejected": rejected,
            "bytes": out.stat().st_size if out.exists() else 0, "batches": batches}
