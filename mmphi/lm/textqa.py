"""Does the LM understand its world in text? Answer held-out questions from a scene described in words.

The multimodal stages later replace the description by image features; an LM that cannot
answer from the description cannot answer from the image either (DESIGN §3b).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from mmphi.chat import IMAGE, format_conversation
from mmphi.common.questions import accuracy_by_type, by_objects_if_known, vqa_correct
from mmphi.world.language import full_captions

EXACT_TYPES = ("colour", "shape", "count", "position", "yesno")


def _description_style(split_dir: Path) -> str:
    """How the world's corpus describes scenes (its world.json), so questions are asked the same way."""
    world = split_dir.parent / "world.json"
    if world.exists():
        return json.loads(world.read_text()).get("settings", {}).get("corpus_descriptions", "paraphrased")
    return "paraphrased"


def text_questions(split_dir: Path, limit: int) -> list[dict]:
    """Single-turn questions (first ``limit``) with the image replaced by a description of the scene
    in the style of the world's corpus: its canonical description, or one of its full captions."""
    style = _description_style(split_dir)
    records = json.loads((split_dir / "instruct.json").read_text())
    coco = json.loads((split_dir / "captions.json").read_text())
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    caps: dict[str, list[str]] = {}
    for ann in coco["annotations"]:
        caps.setdefault(names[ann["image_id"]], []).append(ann["caption"])
    out: list[dict] = []
    for r in records:
        conv = r["conversations"]
        for k, kind in enumerate(r["types"]):
            if kind not in EXACT_TYPES:
                continue
            q = conv[2 * k]["value"]
            if IMAGE not in q:  # later turns: put the image where LLaVA puts it most, first
                q = f"{IMAGE}\n{q}"
            options = full_captions(caps[r["image"]]) if style == "paraphrased" else caps[r["image"]][:1]
            desc = options[len(out) % len(options)]
            out.append({"type": kind, "prompt": format_conversation([(q.replace(IMAGE, desc), None)]),
                        "answer": conv[2 * k + 1]["value"], "record": r["id"], "image": r["image"]})
            if len(out) >= limit:
                return out
    return out


@torch.no_grad()
def greedy_answers(lm, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 32) -> list[str]:
    """Batched greedy decoding (left-padded, KV-cached by ``generate``), cut at EOS."""
    lm.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[str] = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc="text QA", unit="batch", leave=False):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True).to(lm.device)
            gen = lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [o.strip() for o in out]


def text_qa_accuracy(lm, tokenizer, split_dir: Path, limit: int) -> dict:
    """Per-type accuracy (greedy), the same by the number of objects in the scene, and a few examples."""
    items = text_questions(split_dir, limit)
    answers = greedy_answers(lm, tokenizer, [it["prompt"] for it in items])
    pairs = list(zip(items, answers, strict=True))
    rows = [{"type": it["type"], "image": it["image"], "correct": vqa_correct(a, it["answer"])} for it, a in pairs]
    examples = [{"prompt": it["prompt"], "answer": a, "truth": it["answer"]} for it, a in pairs[:5]]
    out = {"accuracy": accuracy_by_type(rows), "examples": examples}
    by_objects = by_objects_if_known(rows, split_dir)
    if by_objects:
        out["by_objects"] = by_objects
    return out
