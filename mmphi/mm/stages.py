"""Stage 1 (``mmphi align``) and stage 2 (``mmphi finetune``): a stage = a freeze/quantise policy + data.

Both run the shared ``fit()`` on a ``ConversationTask``; they differ only in what is trainable
(stage 1: the projector, LM frozen; stage 2: LoRA adapters on the LM, 4-bit NF4 by default, and
the projector) and in their data (captions vs. instruction conversations).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmphi.lm.loading import load_causal_lm
from mmphi.mm.config import AlignConfig, FinetuneConfig
from mmphi.mm.data import ChatEncoder, DataError, Example, caption_examples, llava_examples
from mmphi.mm.model import MultimodalLM, load_projector, lora_targets, read_spec, resolve
from mmphi.mm.projector import build_projector
from mmphi.mm.task import ConversationTask, blind_loss, flops_per_token, open_store, padding_facts, stage_files
from mmphi.mm.vqa import single_questions, vqa_accuracy
from mmphi.tokenizer import load_tokenizer
from mmphi.train import checkpoint as ckpt
from mmphi.train.dist import process_state
from mmphi.train.loop import evaluate_loss, fit
from mmphi.train.rundir import RunDir


def _check_room(examples: Sequence[Example], path: Path, image_tokens: int, max_len: int) -> None:
    """Refuse, before the LM loads, a max_len in which no example fits beside its image (they are all dropped)."""
    if not examples:
        raise DataError(f"no example of {path} fits --max-len {max_len} beside its {image_tokens} image tokens "
                        f"(e.g. CLIP ViT-L/14-336: 576); raise --max-len (LLaVA-1.5 uses 2048)")


def align(cfg: AlignConfig) -> dict:
    procs = process_state()
    run = RunDir(cfg.out).create()
    tokenizer = load_tokenizer(cfg.lm)
    store = open_store(cfg.features)
    image_tokens = store.num_tokens * cfg.tokens_per_feature
    enc = ChatEncoder(tokenizer, image_tokens, cfg.system, cfg.max_len)
    train_file, val_file = stage_files(cfg.data, cfg.val_data, "captions.json")
    train = caption_examples(train_file, enc)
    _check_room(train, train_file, image_tokens, cfg.max_len)
    val = caption_examples(val_file, enc) if val_file else []
    lm = load_causal_lm(cfg.lm, cfg.quantize)
    lm.requires_grad_(False)  # stage 1: the LM is frozen
    positions = store.num_tokens if cfg.image_positions else 0
    spec = {"projector": {"kind": cfg.projector, "in_dim": store.feature_dim, "out_dim": lm.config.hidden_size,
                          "positions": positions, "hidden": cfg.projector_hidden,
                          "tokens_per_feature": cfg.tokens_per_feature},
            "image_tokens": image_tokens, "vision": {"identity": store.identity}, "system": cfg.system,
            "quantized": cfg.quantize, "stage": "align"}

    def save_final(m: MultimodalLM, path: Path) -> None:
        m.save_pretrained(path, tokenizer, cfg.lm, cfg.vision)

    def build(seed: int, save=save_final) -> tuple[MultimodalLM, ConversationTask]:
        torch.manual_seed(seed)
        projector = build_projector(cfg.projector, store.feature_dim, lm.config.hidden_size, positions,
                                    cfg.projector_hidden, cfg.tokens_per_feature)
        model = MultimodalLM(lm, projector.to(lm.device), spec)
        return model, ConversationTask(train, val, store, enc.pad_id, seed, cfg.batch_size,
                                       flops_per_token(lm, trainable_body=False), save, group_by=cfg.group_by,
                                       megabatch=cfg.megabatch)

    facts = {"verb": "align", "train_examples": len(train), "settings": vars(cfg),
             "padding": padding_facts(cfg, train, procs.num_processes, "stage 1", procs.is_main_process)}
    if cfg.candidates == 1:
        model, task = build(cfg.seed)
        result, chosen = fit(task, model, cfg, run, facts), None
    else:
        model, task, result, chosen = _best_candidate(cfg, run, build, facts, enc, procs.is_main_process)
        if procs.is_main_process:  # final/ = the chosen projector, with every candidate's beside it for stage 2
            ranked = sorted(chosen["all"], key=lambda r: r["selection_loss"])
            model.spec = {**model.spec, "candidates": [
                {"seed": r["seed"], "file": f"candidates/seed-{r['seed']}.safetensors",
                 "selection_loss": r["selection_loss"]} for r in ranked]}
            save_final(model, run.final)
            (run.final / "candidates").mkdir()
            for r in chosen["all"]:
                shutil.copy(run.path / "candidates" / f"seed-{r['seed']}" / "final" / "projector.safetensors",
                            run.final / "candidates" / f"seed-{r['seed']}.safetensors")
    if not procs.is_main_process:
        return result
    summary = {**result, "val_caption_loss": result["final_val_loss"]}
    if chosen:
        summary["candidates"] = chosen
        summary["tokens_all_candidates"] = sum(c["tokens"] for c in chosen["all"])
    if val_file:
        blind = caption_examples(val_file, enc, blind=True)
        summary["val_caption_loss_blind"] = blind_loss(task, model, blind, cfg.eval_batches)
        print(f"val caption loss with the image {summary['val_caption_loss']:.3f} vs. with the image removed "
              f"{summary['val_caption_loss_blind']:.3f}")
    run.plot_loss("stage 1: projector alignment (LM frozen)")
    run.write_json("summary.json", summary)
    return summary


def _save_projector(m: MultimodalLM, path: Path) -> None:
    """A candidate's final/: its projector only (the chosen one becomes the stage's full final/)."""
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in m.projector.state_dict().items()},
              path / "projector.safetensors")


def _best_candidate(cfg: AlignConfig, run: RunDir, build, facts: dict, enc: ChatEncoder, main: bool):
    """Train ``cfg.candidates`` projectors in RUN/candidates/seed-S; keep the one with the lowest loss on
    the answers of held-out conversations (what stage 2 will train on) through the frozen LM.

    A finished candidate (its summary.json) is reused on ``--resume``; the chosen one's metrics and
    run facts become the stage's own, so the run directory reads as one run.
    """
    select_file = Path(cfg.select_data) if cfg.select_data else stage_files(cfg.data, "", "instruct.json")[1]
    select = llava_examples(select_file, enc)[0] if select_file and select_file.exists() else []
    by = "held-out answer loss" if select else "val caption loss"
    rows: list[dict] = []
    best: tuple[float, int, RunDir, MultimodalLM, ConversationTask, dict] | None = None
    for k in range(cfg.candidates):
        seed = cfg.seed + k
        sub = RunDir(run.path / "candidates" / f"seed-{seed}").create()
        model, task = build(seed, _save_projector)
        done = sub.read_json("summary.json") if cfg.resume else None
        if done and (sub.final / "projector.safetensors").exists():
            model.projector.load_state_dict(load_file(sub.final / "projector.safetensors"))
            result = done["result"]
        else:
            result = fit(task, model, replace(cfg, seed=seed, out=str(sub.path)), sub, {**facts, "candidate": seed})
        device = next(model.parameters()).device
        score = evaluate_loss(task.with_val(select), model, device, cfg.eval_batches) if select \
            else result["final_val_loss"]
        if score is None:
            raise ValueError("choosing among candidate projectors needs held-out data: conversations "
                             "(--select-data, or a world's val/instruct.json) or val captions with eval_batches > 0")
        row = {"seed": seed, "selection_loss": score, "val_caption_loss": result["final_val_loss"],
               "tokens": result["tokens"]}
        rows.append(row)
        if main:
            sub.write_json("summary.json", {**row, "result": result})
            print(f"candidate projector seed {seed}: {by} {score:.4f}")
        if best is None or score < best[0]:
            best = (score, seed, sub, model, task, result)
    assert best is not None, "AlignConfig checks candidates >= 1"
    score, seed, sub, model, task, result = best
    for name in ("metrics.jsonl", "run.json"):
        if main and (sub.path / name).exists():
            shutil.copy(sub.path / name, run.path / name)
    if main:
        others = ", ".join(f"{r['selection_loss']:.4f}" for r in rows if r["seed"] != seed)
        print(f"kept the projector of seed {seed} ({by} {score:.4f}; the others: {others})")
    return model, task, result, {"by": by, "seed": seed, "all": rows}


def _peft(lm, cfg: FinetuneConfig):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantize:
        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=cfg.grad_checkpointing)
    targets = lora_targets(lm.config.model_type, cfg.lora_targets)
    return get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                         target_modules=targets, bias="none", task_type="CAUSAL_LM"))


def finetune(cfg: FinetuneConfig) -> dict:
    procs = process_state()
    run = RunDir(cfg.out).create()
    spec = read_spec(cfg.init)
    tokenizer = load_tokenizer(cfg.init)
    store = open_store(cfg.features)
    p = spec["projector"]
    patches = spec["image_tokens"] // p.get("tokens_per_feature", 1)
    if store.num_tokens != patches or store.feature_dim != p["in_dim"]:
        raise ValueError(f"feature store {cfg.features} ({store.num_tokens}x{store.feature_dim}) does not match "
                         f"the projector of {cfg.init} ({patches}x{p['in_dim']})")
    enc = ChatEncoder(tokenizer, spec["image_tokens"], spec.get("system", ""), cfg.max_len)
    train_file, val_file = stage_files(cfg.data, cfg.val_data, "instruct.json")
    train, skipped = llava_examples(train_file, enc)
    _check_room(train, train_file, spec["image_tokens"], cfg.max_len)
    if skipped and procs.is_main_process:
        print(f"skipped {skipped} of {skipped + len(train)} records of {train_file}: their first question with its "
              f"image does not fit --max-len {cfg.max_len}")
    val = llava_examples(val_file, enc)[0] if val_file else []
    lm_source = resolve(cfg.init, spec["lm"])
    candidates = spec.pop("candidates", [])
    spec = {**spec, "quantized": cfg.quantize, "stage": "finetune", "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha}}
    vision = resolve(cfg.init, spec["vision"]["source"]) if "source" in spec.get("vision", {}) else None

    def save_final(m: MultimodalLM, path: Path) -> None:
        m.save_pretrained(path, tokenizer, lm_source, vision)

    def build(projector_file: str = "projector.safetensors") -> tuple[MultimodalLM, ConversationTask]:
        torch.manual_seed(cfg.seed)
        lm = _peft(load_causal_lm(lm_source, cfg.quantize), cfg)
        projector = load_projector(cfg.init, spec, projector_file).to(lm.device)
        projector.requires_grad_(True)  # trained in full precision, never quantised
        model = MultimodalLM(lm, projector, spec)
        if cfg.projector_lr:
            model.lr_overrides = {"projector.": cfg.projector_lr}
        return model, ConversationTask(train, val, store, enc.pad_id, cfg.seed, cfg.batch_size,
                                       flops_per_token(lm, trainable_body=False), save_final, cfg.loss == "answer",
                                       cfg.group_by, cfg.megabatch)

    facts = {"verb": "finetune", "train_examples": len(train), "skipped_too_long": skipped, "settings": vars(cfg),
             "padding": padding_facts(cfg, train, procs.num_processes, "stage 2", procs.is_main_process)}
    probed = None
    if 0 < cfg.probe_steps < cfg.max_steps and len(candidates) > 1 and val:
        probed = _probe_candidates(cfg, run, build, candidates, facts, procs.is_main_process)
        model, task = build(probed["file"])
        result = fit(task, model, replace(cfg, resume=True), run, facts)  # continues the winner's probe
    else:
        model, task = build()
        result = fit(task, model, cfg, run, facts)
    if not procs.is_main_process:
        return result
    summary = dict(result)
    if probed:
        summary["probes"] = probed
    if cfg.val_limit and val_file:
        items = single_questions(val_file, cfg.val_limit)
        summary["val_vqa"] = vqa_accuracy(model, tokenizer, enc, items, store.get_many)
        _print_vqa(summary["val_vqa"])
    if cfg.merge:
        from mmphi.mm.export import merge_adapters

        summary["merged"] = str(merge_adapters(run.final, run.path / "merged"))
    run.plot_loss("stage 2: instruction tuning (LoRA + projector)")
    run.write_json("summary.json", summary)
    return summary


def _probe_candidates(cfg: FinetuneConfig, run: RunDir, build, candidates: list[dict], facts: dict,
                      main: bool) -> dict:
    """Start stage 2 from each candidate projector for ``probe_steps`` steps (RUN/probes/seed-S) and keep
    the one with the lowest val loss there; its checkpoint becomes the run's, so stage 2 goes on from it.

    Which projector stage 2 starts from decides whether it learns to read the image at all, and
    that shows within a hundred steps (docs/accuracy.md); the winner's probe steps are not wasted.
    A finished probe (its summary.json) is reused on ``--resume``.
    """
    rows = []
    for c in candidates:
        sub = RunDir(run.path / "probes" / f"seed-{c['seed']}").create()
        done = sub.read_json("summary.json") if cfg.resume else None
        if done is None or ckpt.latest_checkpoint(sub.checkpoints) is None:
            model, task = build(c["file"])
            res = fit(task, model, replace(cfg, out=str(sub.path)), sub, {**facts, "probe": c["seed"]},
                      stop_at=cfg.probe_steps)
            done = {"seed": c["seed"], "file": c["file"], "val_loss": res["val_loss"], "steps": res["steps"],
                    "tokens": res["tokens"]}
            if main:
                sub.write_json("summary.json", done)
        rows.append(done)
        if main:
            print(f"probe from projector seed {c['seed']}: val loss {done['val_loss']:.4f} after {done['steps']} steps")
    best = min(rows, key=lambda r: r["val_loss"])
    going_on = cfg.resume and ckpt.latest_checkpoint(run.checkpoints) is not None  # killed after the probes
    if main and not going_on:
        src = run.path / "probes" / f"seed-{best['seed']}"
        for old in ckpt.list_checkpoints(run.checkpoints):
            shutil.rmtree(old)
        shutil.copytree(src / "checkpoints", run.checkpoints, dirs_exist_ok=True)
        for name in ("metrics.jsonl", "run.json"):
            shutil.copy(src / name, run.path / name)
        print(f"stage 2 goes on from projector seed {best['seed']} (val loss {best['val_loss']:.4f})")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # every process resumes from the copied checkpoint
    return {"seed": best["seed"], "file": best["file"], "steps": cfg.probe_steps, "all": rows,
            "tokens_other_probes": sum(r.get("tokens", 0) for r in rows if r is not best)}


def _print_vqa(res: dict) -> None:
    for mode in ("image", "blind"):
        print(f"val VQA ({mode}): " + ", ".join(f"{k} {v['accuracy'] * 100:.1f}" for k, v in res[mode].items()))
