"""Batched greedy answers from a ``MultimodalLM``: what validation and ``mmphi eval`` score.

Prompts are left-padded so every row's last prompt token lines up, embedded with their image
features, and handed to ``generate(inputs_embeds=...)``: the image is consumed once in the
prefill and decoding continues from the KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from mmphi.mm.data import Example, audio_batch


def left_pad(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e) for e in examples)
    n = len(examples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    image_mask = torch.zeros((n, width), dtype=torch.bool)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e)
        ids[i, width - k:] = torch.tensor(e.input_ids)
        image_mask[i, width - k:] = torch.tensor(e.image_mask)
        attention[i, width - k:] = 1
    return {"input_ids": ids, "image_mask": image_mask, "attention_mask": attention}


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: Sequence[Example], features_of, max_new_tokens: int = 8,
                   batch_size: int = 32, desc: str = "answers", clips=None) -> list[str]:
    """``prompts`` end with "ASSISTANT:"; ``features_of(keys)`` returns (n, N, D) features for image keys;
    ``clips.get_many(keys)`` the (features, lengths) of the prompts' audio clips, if any."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", leave=False):
        chunk = prompts[start:start + batch_size]
        batch = {k: v.to(device) for k, v in left_pad(chunk, pad).items()}
        keys = [e.image for e in chunk if e.image is not None]
        feats = features_of(keys).to(device) if keys else None
        audio = {}
        if any(e.audio is not None for e in chunk):
            width = batch["input_ids"].shape[1]
            audio = {k: v.to(device) for k, v in audio_batch(chunk, width, clips, left=True).items()}
        embeds = model.embed(batch["input_ids"], batch["image_mask"], feats, **audio)
        gen = model.lm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)
        out += tokenizer.batch_decode(gen, skip_special_tokens=True)
    return [o.strip() for o in out]
