"""What stages 1 and 2 hand to ``fit()``: length-grouped conversation batches with their image features."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from mmphi.mm.config import StageArgs
from mmphi.mm.data import Example, collate, lengths, with_image
from mmphi.mm.model import base_lm
from mmphi.mm.sampling import BatchOrder, Grouping, describe_padding, padding_report
from mmphi.train.loop import evaluate_loss
from mmphi.vision.store import FeatureStore


class ConversationTask:
    """Batches of ``Example``s (length-grouped: ``mmphi.mm.sampling``) with their image features from the store."""

    unit = "tokens"

    def __init__(self, train: Sequence[Example], val: Sequence[Example], store: FeatureStore, pad_id: int, seed: int,
                 eval_batch: int, flops_per_token: float, save_final, per_answer: bool = False,
                 group_by: Grouping = "modality", megabatch: int = 32, audio_store=None):
        if not train:
            raise ValueError("no training examples")
        self.train, self.val, self.store, self.pad_id = train, val, store, pad_id
        self.sampler = BatchOrder(lengths(train), seed, group_by, megabatch, with_image(train))
        self.eval_batch, self.fpt, self._save_final = eval_batch, flops_per_token, save_final
        self.per_answer = per_answer
        self.audio_store = audio_store  # spoken clips' features (the speech stages), or None

    def batch(self, index: int, size: int, rank: int, world: int) -> dict:
        chosen = self.sampler.batch(index, size * world)[rank * size:(rank + 1) * size]
        return collate([self.train[i] for i in chosen], self.pad_id, self.store, self.per_answer, self.audio_store)

    def loss(self, model, batch):
        tokens = float(batch["attention_mask"].sum())
        counts = {"tokens": tokens, "samples": float(len(batch["input_ids"])), "flops": tokens * self.fpt,
                  "loss_tokens": float((batch["labels"] != -100).sum())}
        return model(**batch), counts

    def eval_batches(self, examples: Sequence[Example] | None = None):
        examples = self.val if examples is None else examples
        for i in range(0, len(examples), self.eval_batch):
            yield collate(examples[i:i + self.eval_batch], self.pad_id, self.store, self.per_answer, self.audio_store)

    def save_final(self, model, path: Path) -> None:
        self._save_final(model, path)

    def with_val(self, examples: Sequence[Example]) -> ConversationTask:
        other = copy.copy(self)
        other.val = examples
        return other


def stage_files(data: str, val_data: str, name: str) -> tuple[Path, Path | None]:
    world = Path(data)
    if (world / "world.json").exists():
        return world / "train" / name, Path(val_data) if val_data else world / "val" / name
    return world, Path(val_data) if val_data else None


def flops_per_token(lm, trainable_body: bool) -> float:
    """~2N forward + 2N activation gradients (+ 2N weight gradients when the body itself trains)."""
    n = sum(p.numel() for name, p in base_lm(lm).named_parameters() if "embed" not in name and "lm_head" not in name)
    return (6 if trainable_body else 4) * n


def open_store(path: str) -> FeatureStore:
    return FeatureStore.open(path)


def blind_loss(task: ConversationTask, model, examples: Sequence[Example], batches: int) -> float:
    """Validation loss of the same model on the same targets with the image removed from the prompt."""
    return evaluate_loss(task.with_val(examples), model, next(model.parameters()).device, batches)




def padding_facts(cfg: StageArgs, train: Sequence[Example], world: int, what: str, main: bool) -> dict:
    """The padding share of an epoch's batches as this run forms them, beside unsorted batches: printed
    at the start of the stage (main process) and recorded in its run.json."""
    report = padding_report(lengths(train), with_image(train), cfg.seed, cfg.group_by, cfg.megabatch, cfg.batch_size,
                            world)
    if main:
        print(describe_padding(report, what))
    return report
