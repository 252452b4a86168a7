"""``mmphi base``: make the bundled tiny Phi base (``mmphi/tiny-phi-base``) by mmphi's own recipe.

    OUT/world/        the base's own shapes world (recipe ``tiny-base``: seed 1, an 80,000-scene corpus)
    OUT/pretrain/     stage 0 on its corpus, a resumable run (kill it and run the command again)
    OUT/check-world/  a fresh world (another seed) whose val split checks the base's text QA
    OUT/model/        the bundled folder: config.json, model.safetensors, tokenizer, README.md (the
                      model card), bundle.json (figures, sha256), curve.json and loss.png

The weights keep only the rows of the live vocabulary (the ids the corpus uses): embedding and
head rows of every other id are zero and their head bias stays pinned, so the model is still a
plain 51,200-id ``PhiForCausalLM`` whose softmax never picks them, and the ~51,000 zero rows
compress to almost nothing in git and in a wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import torch

from mmphi.bundled import WEIGHTS, sha256_of
from mmphi.config import build, load_recipe
from mmphi.errors import MmphiError
from mmphi.lm.config import BaseConfig, PretrainConfig, base_stage0
from mmphi.world.config import WorldConfig

FORMAT = "mmphi bundled model v1"


def _world(settings: dict, out: Path) -> Path:
    """Build the world unless the folder already holds one made with the same settings (resume)."""
    from mmphi.world.build import build_world, recorded_settings

    cfg = build(WorldConfig, settings, {"out": str(out)})
    summary = out / "world.json"
    wanted = recorded_settings(cfg)
    if not summary.exists() or json.loads(summary.read_text()).get("settings") != wanted:
        build_world(cfg)
    return out


def make_base(cfg: BaseConfig) -> dict:
    from mmphi.lm.pretrain import pretrain

    recipe = load_recipe(cfg.recipe)
    root = Path(cfg.out)
    world_over: dict = {"scenes": cfg.scenes} if cfg.scenes else {}
    if cfg.corpus_scenes >= 0:
        world_over["corpus_scenes"] = cfg.corpus_scenes
    world = _world({**(recipe.get("world") or {}), **world_over}, root / "world")
    pre = base_stage0(cfg, recipe)
    if cfg.extend_to and cfg.extend_to <= pre.max_steps:
        raise MmphiError(f"extend_to ({cfg.extend_to}) must be above the stage-0 steps ({pre.max_steps})")
    if not cfg.extend_to or _steps_done(root / "pretrain") < pre.max_steps:  # (a rerun skips a finished phase)
        summary = pretrain(pre)
    phases = [pre.max_steps]
    if cfg.extend_to:
        summary = pretrain(replace(pre, max_steps=cfg.extend_to))
        phases.append(cfg.extend_to)
    check_world = _world({**(recipe.get("world") or {}), "seed": cfg.check_seed, "scenes": cfg.check_scenes,
                          "corpus_scenes": 0, "speech": 0}, root / "check-world")
    fresh = _fresh_text_qa(root / "pretrain" / "final", check_world / "val", cfg.check_questions)
    print(f"text QA on a fresh world's val split (seed {cfg.check_seed}): "
          f"{fresh['accuracy']['overall']['accuracy'] * 100:.1f}% of {fresh['accuracy']['overall']['n']}")
    run_facts = json.loads((root / "pretrain" / "run.json").read_text())
    facts = _facts(cfg, pre, {**run_facts, **summary}, fresh, json.loads((world / "world.json").read_text()))
    facts["training"]["phases"] = phases
    into = Path(cfg.into) if cfg.into else root / "model"
    export_bundle(root / "pretrain", into, facts)
    print(f"bundled model written to {into} (sha256 {facts['sha256'][:16]}...)")
    return {"model": str(into), **{k: facts[k] for k in ("sha256", "live_vocab", "text_qa")}}


def _steps_done(run: Path) -> int:
    from mmphi.train.checkpoint import latest_checkpoint

    last = latest_checkpoint(run / "checkpoints")
    return int(last.name.split("-")[-1]) if last is not None else 0


def _fresh_text_qa(model: Path, split: Path, limit: int) -> dict:
    from transformers import AutoModelForCausalLM

    from mmphi.lm.textqa import text_qa_accuracy
    from mmphi.tokenizer import load_tokenizer

    return text_qa_accuracy(AutoModelForCausalLM.from_pretrained(model), load_tokenizer(str(model)), split, limit)


def _facts(cfg: BaseConfig, pre: PretrainConfig, summary: dict, fresh: dict, world: dict) -> dict:
    """What the model card and bundle.json say: the command, data, training, figures."""
    command = "mmphi base" + (f" --recipe {cfg.recipe}" if cfg.recipe != "tiny-base" else "")
    defaults = build(BaseConfig, load_recipe(cfg.recipe).get("base") or {})  # flags that differ are shown
    for name in ("max_steps", "extend_to", "scenes", "corpus_scenes"):
        if getattr(cfg, name) != getattr(defaults, name):
            command += f" --{name.replace('_', '-')} {getattr(cfg, name)}"
    own = summary.get("text_qa", {})
    return {
        "format": FORMAT, "name": cfg.name, "command": command, "recipe": cfg.recipe, "mmphi_commit": _commit(),
        "world": {"seed": world["settings"]["seed"], "settings": world["settings"], "splits": world["splits"]},
        "corpus": {"train_tokens": summary.get("train_tokens"), "val_tokens": summary.get("val_tokens")},
        "training": {"steps": summary["steps"], "tokens": summary["tokens"],
                     "minutes": round(summary["elapsed_s"] / 60, 1),
                     "seq_len": pre.seq_len, "batch_size": pre.batch_size, "lr": pre.lr, "seed": pre.seed,
                     "compile": pre.compile, "model": pre.model, "machine": _machine()},
        "params": summary["params"], "live_vocab": summary.get("live_vocab"),
        "loss": {k: summary.get(k) for k in ("initial_loss", "initial_loss_full_vocab", "target_loss",
                                             "step_reached_target", "final_val_loss", "final_val_loss_full_vocab")},
        "text_qa": {"own_val": {"seed": world["settings"]["seed"], **_qa(own)},
                    "fresh_val": {"seed": cfg.check_seed, **_qa(fresh)}},
    }


def _qa(result: dict) -> dict:
    return {k: result[k] for k in ("accuracy", "by_objects") if k in result}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


@torch.no_grad()
def compact_weights(lm) -> int:
    """Zero the embedding and head rows of every id outside the live vocabulary (their bias stays pinned);
    returns the number of live ids."""
    from mmphi.lm.model import live_vocab

    live = live_vocab(lm)
    if live is None:
        raise ValueError("the model has no pinned vocabulary: every row is live, nothing to compact")
    dead = torch.ones(lm.config.vocab_size, dtype=torch.bool)
    dead[live] = False
    lm.get_input_embeddings().weight[dead] = 0.0
    lm.get_output_embeddings().weight[dead] = 0.0
    return len(live)


def export_bundle(run: Path, into: Path, facts: dict) -> Path:
    """Write the bundled folder from a pretrain run (its final/, metrics and loss curve), atomically."""
    from transformers import PhiForCausalLM

    from mmphi.lm.card import model_card
    from mmphi.tokenizer import load_tokenizer

    tmp = into.with_name(into.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lm = PhiForCausalLM.from_pretrained(run / "final")
    facts["live_vocab"] = compact_weights(lm)
    lm.save_pretrained(tmp)
    load_tokenizer(str(run / "final")).save_pretrained(tmp)
    if (run / "loss.png").exists():
        shutil.copy(run / "loss.png", tmp / "loss.png")
    (tmp / "curve.json").write_text(json.dumps(_curve(run / "metrics.jsonl")) + "\n")
    facts["sha256"] = sha256_of(tmp / WEIGHTS)
    facts["weights"] = WEIGHTS
    (tmp / "bundle.json").write_text(json.dumps(facts, indent=1) + "\n")
    (tmp / "README.md").write_text(model_card(facts))
    if into.exists():
        shutil.rmtree(into)
    into.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(into)
    return into


def _curve(metrics: Path) -> dict:
    """The loss curve as numbers (train every logged step, val at every evaluation): demos plot theirs beside it."""
    train, val = {}, {}  # by step: a resumed run evaluates its last step again
    for line in metrics.read_text().splitlines():
        m = json.loads(line)
        if m.get("split") == "val" and "eval_loss" in m:
            val[m["step"]] = round(m["eval_loss"], 5)
        elif "split" not in m and "loss" in m:
            train[m["step"]] = round(m["loss"], 5)
    return {"train": sorted(train.items()), "val": sorted(val.items())}
