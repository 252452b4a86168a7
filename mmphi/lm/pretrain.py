"""``mmphi pretrain``: stage 0, a Phi-architecture LM trained from scratch with Phi-2's tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PhiForCausalLM

from mmphi.bundled import resolve_model
from mmphi.lm.config import PretrainConfig
from mmphi.lm.corpus import load_doc_starts, load_tokens, prepare_corpus
from mmphi.lm.loading import fuse_gelu
from mmphi.lm.model import CausalLMLoss, count_params, phi_config, pin_vocab, train_flops_per_token
from mmphi.tokenizer import load_tokenizer
from mmphi.train.dist import process_state
from mmphi.train.loop import fit
from mmphi.train.rundir import RunDir


def _usable_starts(doc_starts: np.ndarray | None, n_tokens: int, seq_len: int) -> np.ndarray:
    """Window starts: document starts that leave a full window (all offsets if documents are unknown)."""
    if doc_starts is None:
        return np.arange(0, n_tokens - seq_len - 1)
    starts = doc_starts[doc_starts <= n_tokens - seq_len - 1]
    return starts if len(starts) else np.arange(0, n_tokens - seq_len - 1)


class PretrainTask:
    """Windows of the token stream that start where a document starts; window ``index`` is a pure
    function of (seed, index).

    Starting at a document boundary matters: a window cut into the middle of a document holds
    questions whose scene description fell before the cut, which teaches the model to guess
    instead of reading its context.
    """

    unit = "tokens"

    def __init__(self, train: np.ndarray, val: np.ndarray, seq_len: int, seed: int, flops_per_token: float,
                 eval_batch: int, tokenizer, train_docs: np.ndarray | None = None,
                 val_docs: np.ndarray | None = None):
        self.train, self.val, self.seq_len, self.seed = train, val, seq_len, seed
        self.fpt, self.eval_batch, self.tokenizer = flops_per_token, eval_batch, tokenizer
        if len(train) <= seq_len + 1 or len(val) <= seq_len + 1:
            raise ValueError(f"corpus too small for seq_len {seq_len}: {len(train)} train / {len(val)} val tokens")
        self.starts = _usable_starts(train_docs, len(train), seq_len)
        self.val_starts = self._disjoint(_usable_starts(val_docs, len(val), seq_len))

    def _disjoint(self, starts: np.ndarray) -> list[int]:
        """Document-aligned validation windows that do not overlap: the same ones every evaluation."""
        out, end = [], 0
        for s in starts:
            if s >= end:
                out.append(int(s))
                end = s + self.seq_len
        return out

    def _windows(self, tokens: np.ndarray, starts) -> torch.Tensor:
        return torch.from_numpy(np.stack([tokens[s:s + self.seq_len + 1] for s in starts]).astype(np.int64))

    def batch(self, index: int, size: int, rank: int, world: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        starts = self.starts[rng.integers(0, len(self.starts), size=size * world)]  # the global batch
        return {"ids": self._windows(self.train, starts[rank * size:(rank + 1) * size])}

    def loss(self, model, batch):
        ids = batch["ids"]
        n = ids.shape[0] * self.seq_len
        return model(ids), {"tokens": n, "samples": ids.shape[0], "flops": n * self.fpt}

    def eval_batches(self):
        for i in range(0, len(self.val_starts), self.eval_batch):
            yield {"ids": self._windows(self.val, self.val_starts[i:i + self.eval_batch])}

    def save_final(self, model, path: Path) -> None:
        model.export().save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    qa_every: int = 0
    qa_split: Path | None = None

    def extra_eval(self, model, step: int) -> dict:
        """Text-QA accuracy during training (``--text-qa-every``), to watch the skill appear."""
        if not self.qa_every or self.qa_split is None or step % self.qa_every:
            return {}
        from mmphi.lm.textqa import text_qa_accuracy

        acc = text_qa_accuracy(model.export(), self.tokenizer, self.qa_split, 150)["accuracy"]
        model.lm.train()
        return {"text_qa": round(acc["overall"]["accuracy"], 4)}


@torch.no_grad()
def lm_loss(lm, tokens: np.ndarray, seq_len: int, windows: int, batch_size: int = 16,
            starts: list[int] | None = None) -> float:
    """Mean next-token loss of any causal LM over the full vocabulary on the first ``windows`` windows
    (consecutive ones, or those starting at ``starts``)."""
    lm.eval()
    total, count = 0.0, 0
    if starts is None:
        starts = [j * seq_len for j in range((len(tokens) - 1) // seq_len)]
    starts = starts[:windows]
    for i in range(0, len(starts), batch_size):
        ids = torch.from_numpy(np.stack([tokens[j:j + seq_len + 1]
                                         for j in starts[i:i + batch_size]]).astype(np.int64))
        ids = ids.to(lm.device)
        logits = lm(input_ids=ids[:, :-1]).logits.float()
        total += F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
        count += ids[:, 1:].numel()
    return total / count


def _corpus(cfg: PretrainConfig, tokenizer, run: RunDir) -> Path:
    if (Path(cfg.data) / "meta.json").exists():
        return Path(cfg.data)
    out = run.path / "data"
    prepare_corpus(cfg.data, out, tokenizer, cfg.val_frac, cfg.max_tokens)
    return out


def _first_step_below(run: RunDir, threshold: float) -> int | None:
    for m in run.metrics():
        if m.get("split") == "val" and m["eval_loss"] <= threshold:
            return m["step"]
    return None


def pretrain(cfg: PretrainConfig) -> dict:
    procs = process_state()
    run = RunDir(cfg.out).create()
    tokenizer = load_tokenizer(cfg.tokenizer)
    with procs.main_process_first():  # one process tokenizes; the others then find it done
        data = _corpus(cfg, tokenizer, run)
    train, val = load_tokens(data, "train"), load_tokens(data, "val")
    train_docs, val_docs = load_doc_starts(data, "train"), load_doc_starts(data, "val")
    torch.manual_seed(cfg.seed)
    arch = phi_config(cfg.model, tokenizer)
    lm = fuse_gelu(PhiForCausalLM(arch))
    facts: dict = {"verb": "pretrain", "params": count_params(arch), "train_tokens": len(train),
                   "val_tokens": len(val), "settings": vars(cfg)}
    vocab = None
    if cfg.head == "live":
        # Before pinning: the loss of the same random model over all 50,257 ids, for reference.
        facts["initial_loss_full_vocab"] = lm_loss(lm, val, cfg.seq_len, cfg.eval_batches * cfg.batch_size)
        vocab = torch.from_numpy(np.union1d(np.unique(train), [tokenizer.eos_token_id]).astype(np.int64))
        pin_vocab(lm, vocab)
        facts["live_vocab"] = len(vocab)
    head_ids = arch.vocab_size if vocab is None else len(vocab)
    task = PretrainTask(train, val, cfg.seq_len, cfg.seed, train_flops_per_token(arch, head_ids, cfg.seq_len),
                        cfg.batch_size, tokenizer, train_docs, val_docs)
    if cfg.text_qa_every and (Path(cfg.data) / "world.json").exists():
        task.qa_every, task.qa_split = cfg.text_qa_every, Path(cfg.data) / "val"
    result = fit(task, CausalLMLoss(lm, vocab), cfg, run, facts)
    if not procs.is_main_process:
        return result
    facts = run.read_json("run.json") or facts
    return _report(cfg, run, result, facts, val, task.val_starts)


def _report(cfg: PretrainConfig, run: RunDir, result: dict, facts: dict, val: np.ndarray, starts: list[int]) -> dict:
    initial = result["initial_val_loss"]
    summary = {**result, "initial_loss": initial, "initial_loss_full_vocab": facts.get("initial_loss_full_vocab"),
               "live_vocab": facts.get("live_vocab"), "params": facts["params"]}
    if initial is not None and not math.isnan(initial):
        summary["target_loss"] = initial - 1
        summary["step_reached_target"] = _first_step_below(run, initial - 1)
        run.plot_loss("stage 0: pretraining", {"initial - 1": initial - 1})
    lm = AutoModelForCausalLM.from_pretrained(run.final)
    tokenizer = load_tokenizer(str(run.final))
    windows = cfg.eval_batches * cfg.batch_size
    summary["final_val_loss_full_vocab"] = lm_loss(lm, val, cfg.seq_len, windows, starts=starts)
    world = Path(cfg.data)
    qa = bool(cfg.text_qa and (world / "world.json").exists())
    if qa:
        from mmphi.lm.textqa import text_qa_accuracy

        summary["text_qa"] = text_qa_accuracy(lm, tokenizer, world / "val", cfg.text_qa)
    if cfg.reference:
        ref_dir = resolve_model(cfg.reference)
        ref = AutoModelForCausalLM.from_pretrained(ref_dir)
        summary["reference"] = cfg.reference
        summary["reference_val_loss"] = lm_loss(ref, val, cfg.seq_len, windows, starts=starts)
        summary["gap_to_reference"] = summary["final_val_loss_full_vocab"] - summary["reference_val_loss"]
        if qa:  # the same held-out questions through the reference
            summary["reference_text_qa"] = text_qa_accuracy(ref, load_tokenizer(ref_dir), world / "val", cfg.text_qa)
        _plot_beside_reference(run, Path(ref_dir), cfg.reference)
    run.write_json("summary.json", summary)
    _print(summary)
    return summary


def _plot_beside_reference(run: RunDir, ref_dir: Path, name: str) -> None:
    """``loss_vs_reference.png``: this run's val loss beside the reference's own (a bundled base ships its
    curve in curve.json), on a log step axis since the reference trained far longer."""
    curve = ref_dir / "curve.json"
    if not curve.exists():
        return
    from mmphi.common.charts import line_chart

    ref = json.loads(curve.read_text())["val"]
    own = [(m["step"], m["eval_loss"]) for m in run.metrics() if m.get("split") == "val" and "eval_loss" in m]
    series = {"this run (val)": ([max(s, 1) for s, _ in own], [v for _, v in own]),
              f"{name} (val, its own world)": ([max(s, 1) for s, _ in ref], [v for _, v in ref])}
    line_chart(run.path / "loss_vs_reference.png", "stage 0 from scratch beside the pretrained base", series,
               xlabel="step (log scale)", ylabel="val loss over the live vocabulary", logx=True)


def _print(s: dict) -> None:
    print(f"params: {s['params']['total'] / 1e6:.1f}M ({s['params']['body'] / 1e6:.2f}M in the blocks)")
    if s.get("initial_loss_full_vocab"):
        print(f"initial loss over the full 50,257-id vocabulary (random init): {s['initial_loss_full_vocab']:.3f}")
    if s.get("initial_loss") is not None:
        live = f" over the {s['live_vocab']} ids the corpus uses" if s.get("live_vocab") else ""
        print(f"initial val loss{live}: {s['initial_loss']:.3f}; initial - 1 = {s['target_loss']:.3f} reached at "
              f"step {s.get('step_reached_target')}")
    if s.get("final_val_loss") is not None:
        print(f"final val loss: {s['final_val_loss']:.3f} after {s['steps']} steps, {s['tokens']:,} tokens, "
              f"{s['elapsed_s'] / 60:.1f} min")
    if "reference_val_loss" in s:
        print(f"reference {s['reference']}: val loss {s['reference_val_loss']:.3f} "
              f"(gap {s['gap_to_reference']:+.3f})")
    if "reference_text_qa" in s:
        print(f"reference text QA on the same questions: "
              f"{s['reference_text_qa']['accuracy']['overall']['accuracy'] * 100:.1f}%")
    if "text_qa" in s:
        acc = s["text_qa"]["accuracy"]
        print("text QA (scene described in words): " + json.dumps({k: round(v["accuracy"] * 100, 1)
                                                                   for k, v in acc.items()}))
