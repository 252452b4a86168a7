"""Visual question answering on the shapes world: each exact-answer question asked alone, greedily.

Shared by stage 2's validation and ``mmphi eval`` (which imports it from here, below it). The image
sits where the record put it (start or end of the first turn); the blind baseline asks the same
question with no image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from mmphi.chat import AUDIO, DESCRIBE, IMAGE
from mmphi.common.questions import EXACT_TYPES, accuracy_by_type, vqa_correct


def single_questions(instruct_file: Path, limit: int = 0) -> list[dict]:
    """Every exact-answer turn of a LLaVA-format file, as a standalone question about its image."""
    out = []
    for r in json.loads(Path(instruct_file).read_text()):
        if not r.get("image"):
            continue
        conv = r["conversations"]
        at_end = conv[0]["value"].strip().endswith(IMAGE)
        for k, kind in enumerate(r.get("types", [])):
            if kind in EXACT_TYPES:
                out.append({"record": r.get("id"), "type": kind, "image": r["image"], "at_end": at_end,
                            "question": conv[2 * k]["value"].replace(IMAGE, "").strip(),
                            "answer": conv[2 * k + 1]["value"]})
                if limit and len(out) >= limit:
                    return out
    return out


def prompt_text(question: str, with_image: bool, at_end: bool = False) -> str:
    if not with_image:
        return question
    return f"{question}\n{IMAGE}" if at_end else f"{IMAGE}\n{question}"


def answer_questions(model, tokenizer, encoder, items: Sequence[dict], features_of: Callable, with_image: bool,
                     desc: str, max_new_tokens: int = 8, describe_first: bool = False, clips=None) -> list[dict]:
    """Rows of {type, question, answer, prediction, correct, image} for ``items`` (greedy, batched).

    An item with an ``audio_key`` is asked by its clip instead of its text: the clip's features from
    ``clips`` (``tokens(key)``, ``get_many(keys)``: an audio feature store, or clips encoded on the fly)
    stand at an ``<audio>`` placeholder where the question's words would be.

    ``describe_first`` (with the image): the model first describes the image ("Describe the
    image.", greedy, once per image), and the question follows as the second turn of that
    conversation, so the answer can draw on the model's own description (each row keeps it
    as ``description``).
    """
    from mmphi.mm.answer import greedy_answers

    described: dict[str, str] = {}
    if describe_first and with_image:
        images = list(dict.fromkeys(it["image"] for it in items))
        first = [encoder.encode([(prompt_text(DESCRIBE, True), None)], im) for im in images]
        described = dict(zip(images, greedy_answers(model, tokenizer, first, features_of, max_new_tokens=48,
                                                    desc=f"{desc} (describing)"), strict=True))

    def rounds(it: dict) -> list:
        question = AUDIO if it.get("audio_key") else it["question"]
        if it["image"] in described:
            return [(prompt_text(DESCRIBE, True), described[it["image"]]), (question, None)]
        return [(prompt_text(question, with_image, it.get("at_end", False)), None)]

    def clip(it: dict) -> tuple[str | None, int]:
        key = it.get("audio_key")
        return (key, clips.tokens(key)) if key else (None, 0)

    prompts = [encoder.encode(rounds(it), it["image"] if with_image else None, "", (), *clip(it)) for it in items]
    predictions = greedy_answers(model, tokenizer, prompts, features_of, max_new_tokens=max_new_tokens, desc=desc,
                                 clips=clips)
    return [{**it, "prediction": p, "correct": vqa_correct(p, it["answer"]),
             **({"description": described[it["image"]]} if it["image"] in described else {})}
            for it, p in zip(items, predictions, strict=True)]


def vqa_accuracy(model, tokenizer, encoder, items: Sequence[dict], features_of: Callable) -> dict:
    """Per-type accuracy with the image and with it removed (the blind baseline)."""
    return {mode: accuracy_by_type(answer_questions(model, tokenizer, encoder, items, features_of,
                                                    mode == "image", f"vqa {mode}"))
            for mode in ("image", "blind")}
