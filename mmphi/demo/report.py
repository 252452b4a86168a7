"""``DEMO/report.md``: what the demo trained and how well it works, every number taken from the run."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from mmphi.common.tables import accuracy_table, markdown_table, pct
from mmphi.eval.report import by_objects_section, naming_line

START, END = "<!-- results:start -->", "<!-- results:end -->"
# What the multimodal stages aim for on the shapes world, per question type (README, docs/accuracy.md).
AIMS = {"colour": 0.90, "shape": 0.90, "count": 0.95, "position": 0.85, "yesno": 0.85}


def _read(root: Path, *parts: str) -> dict:
    path = root.joinpath(*parts)
    return json.loads(path.read_text()) if path.exists() else {}


def _m(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def _training_table(root: Path, state: dict) -> str:
    stages = state["stages"]
    clip, pre = _read(root, "clip", "run.json"), _read(root, "pretrain", "run.json")
    align, fine = _read(root, "align", "run.json"), _read(root, "finetune", "run.json")
    rows = []
    if clip:
        s = stages["clip"]["summary"]
        # run.json's total counts the trained copy of the live embedding rows too; params.total is the model's
        rows.append(["tiny CLIP (vision + text towers)", _m(clip.get("params", {}).get("total", clip["total_params"])),
                     f"{s['samples']:,} image-caption pairs", f"{stages['clip']['minutes']:.1f}"])
    tower = vision_facts(state)
    if tower is not None:
        rows.append([f"`{tower['name']}`, the bundled vision tower stages 1-2 read images with (trained by "
                     f"`{tower['commands'][-1]}`, not in this run)",
                     _m(tower["params"]), f"{tower['steps'] * tower['batch_size']:,} image-caption pairs",
                     f"({tower['minutes']})"])
    base = base_facts(state)
    if pre:
        s = stages["pretrain"]["summary"]
        role = "stages 1-2 build on it" if _own_base(root, state) else "the stage-0 demonstration"
        cut = f"; cut at step {s['steps']} of {s['max_steps']} by the time cap" if s.get("cut_by_time_cap") else ""
        rows.append([f"Phi LM from scratch, {role} ({_m(pre['params']['body'])} in the blocks, live vocabulary "
                     f"{pre.get('live_vocab', 'all')} ids{cut})", _m(pre["params"]["total"]), f"{s['tokens']:,} tokens",
                     f"{stages['pretrain']['minutes']:.1f}"])
    if base is not None:
        t = base["training"]
        rows.append([f"`{base['name']}`, the bundled base stages 1-2 build on (pretrained by `{base['command']}`, "
                     "not in this run)", _m(base["params"]["total"]), f"{t['tokens']:,} tokens", f"({t['minutes']})"])
    if align:
        s = stages["align"]["summary"]
        picked = s.get("candidates")
        what = (f"stage 1: {len(picked['all'])} projectors, one per seed (LM frozen)" if picked
                else "stage 1: projector (LM frozen)")
        tokens = s.get("tokens_all_candidates", s["tokens"])
        rows.append([what, _m(align["trainable_params"]), f"{tokens:,} tokens", f"{stages['align']['minutes']:.1f}"])
    if fine:
        s = stages["finetune"]["summary"]
        q = "4-bit NF4 LM + " if fine["settings"].get("quantize") else ""
        probes = s.get("probes")
        tried = (f", from the best of {len(probes['all'])} stage-1 projectors after {probes['steps']} steps each"
                 if probes else "")
        tokens = s["tokens"] + (probes or {}).get("tokens_other_probes", 0)
        rows.append([f"stage 2: {q}LoRA r={fine['settings']['lora_r']} + projector{tried}",
                     f"{_m(fine['trainable_params'])} trainable of {_m(fine['total_params'])}",
                     f"{tokens:,} tokens", f"{stages['finetune']['minutes']:.1f}"])
    return markdown_table(["model", "parameters", "trained on", "minutes"], rows)


def _own_base(root: Path, state: dict) -> bool:
    """Do stages 1-2 build on this run's own stage 0?"""
    lm = state.get("lm")
    return lm is None or Path(lm).resolve() == (root / "pretrain" / "final").resolve()


def base_facts(state: dict) -> dict | None:
    """The bundle.json of the bundled (or bundle-like) base stages 1-2 built on, if they did."""
    return _bundle_of(state, "lm")


def vision_facts(state: dict) -> dict | None:
    """The bundle.json of the bundled vision tower stages 1-2 read images with, if they did."""
    return _bundle_of(state, "vision")


def _bundle_of(state: dict, key: str) -> dict | None:
    from mmphi.bundled import bundle_facts

    return bundle_facts(state[key]) if state.get(key) else None


def _base_lines(state: dict, s: dict) -> list[str]:
    base = base_facts(state)
    if base is None:
        return [f"Stages 1-2 build on `{state['lm']}`.", ""] if state.get("lm") and "reference" not in s else []
    t, fresh = base["training"], base["text_qa"]["fresh_val"]["accuracy"]["overall"]
    return [f"Stages 1-2 build on `{base['name']}`, the pretrained base mmphi ships (as the phi2 recipe builds on "
            f"microsoft/phi-2): the same architecture pretrained by `{base['command']}` for {t['steps']:,} steps "
            f"({t['tokens']:,} tokens, {t['minutes']} minutes on {t['machine']}) on a world of its own, text QA "
            f"{pct(fresh['accuracy'])}% on a fresh world's val split (its model card: "
            f"`mmphi/models/{base['name'].split('/', 1)[1]}/README.md`). This run's stage 0 trains that architecture "
            "from scratch on this run's world, to show pretraining at work:", ""]


def _stage0(root: Path, state: dict) -> list[str]:
    s = _read(root, "pretrain", "summary.json")
    if not s:
        return []
    lines = ["### Stage 0: pretraining from scratch", "", *_base_lines(state, s),
             f"- initial val loss {s['initial_loss']:.3f} over the {s.get('live_vocab')} token ids the corpus uses "
             f"(the same random model over Phi-2's full vocabulary: {s.get('initial_loss_full_vocab') or 0:.3f})",
             f"- val loss reached initial - 1 = {s['target_loss']:.3f} at step {s['step_reached_target']}",
             f"- final val loss {s['final_val_loss']:.3f} after {s['steps']} steps ({s['tokens']:,} tokens)"]
    if s.get("cut_by_time_cap"):
        lines.append(f"- cut by the {s['cut_by_time_cap']}-minute cap at step {s['steps']} of {s['max_steps']}")
    if "reference" in s:
        lines.append(f"- on the same held-out tokens, over Phi-2's full vocabulary: this run "
                     f"{s['final_val_loss_full_vocab']:.3f}, `{s['reference']}` {s['reference_val_loss']:.3f}")
    lines.append("")
    if "text_qa" in s:
        qa = s["text_qa"]
        if "reference_text_qa" in s:
            ref = s["reference_text_qa"]
            columns = {f"from scratch, {s['steps']} steps": qa["accuracy"], s["reference"]: ref["accuracy"],
                       **ref.get("by_objects", {})}
            lines += ["Held-out questions answered from the scene *described in words* (greedy): this run's LM and "
                      f"`{s['reference']}` on the same questions, then `{s['reference']}` by the number of objects in "
                      "the scene:", "", accuracy_table(columns), ""]
        else:
            lines += ["Held-out questions answered from the scene *described in words* (greedy), in all and by "
                      "the number of objects in the scene:", "",
                      accuracy_table({"all": qa["accuracy"], **qa.get("by_objects", {})}), ""]
    if (root / "pretrain" / "loss_vs_reference.png").exists():
        lines += ["![stage 0 beside the base](pretrain/loss_vs_reference.png)", ""]
    return [*lines, "![stage 0 loss](pretrain/loss.png)", ""]


def aims_line(typed: dict, how: str = "") -> str:
    """Which question types reach their aim, from the typed accuracy of the run (``how``: which answers)."""
    rule = "colour and shape ≥ 90%, count ≥ 95%, position and yesno ≥ 85%" + (f"; {how}" if how else "")
    asked = [k for k in AIMS if k in typed]
    met = [k for k in asked if typed[k]["accuracy"] >= AIMS[k]]
    short = [f"{k} ({pct(typed[k]['accuracy'])}%)" for k in asked if k not in met]
    if not asked:
        verdict = "no questions of these types in this run."
    elif not short:
        verdict = "met for every type."
    elif not met:
        verdict = f"met for none yet: {', '.join(short)}."
    else:
        verdict = f"met for {', '.join(met)}; not yet for {', '.join(short)}."
    return f"Aims ({rule}): {verdict}"


def _eval(root: Path) -> list[str]:
    e = _read(root, "eval", "results.json")
    if not e:
        return []
    lines = ["### Test split: visual question answering", "",
             "Each question asked alone, greedy; *blind* = the same model and questions with the image removed; "
             "*spoken* = the spoken test questions through Whisper, with the typed accuracy on exactly those "
             "questions beside it" + (" (both answered after describing, as the recipe's assistant answers)"
                                      if e.get("asr", {}).get("after_describing") else "") + ".", "",
             accuracy_table(e["vqa"]), "", aims_line(e["vqa"]["typed"], "direct answers"),
             ""]
    after = e["vqa"].get("typed, after describing")
    if after:
        lines += ["*typed, after describing*: the same questions asked as the second turn of a conversation whose "
                  "first turn is the model's own answer to \"Describe the image.\" (`mmphi eval --describe-first`).",
                  "", aims_line(after, "after describing"), ""]
    lines += ["![VQA](eval/vqa.png)", ""]
    if e.get("vqa_by_objects"):
        lines += by_objects_section(e["vqa_by_objects"], "####")
    if e.get("position_by_naming"):
        lines += [naming_line(e["position_by_naming"]), ""]
    if "asr" in e:
        a = e["asr"]
        lines += [f"Speech: word error rate {pct(a['wer'])}% on {a['n']} spoken questions, real-time factor "
                  f"{a['real_time_factor']:.3f} (Whisper tiny.en, int8, CPU).", ""]
    if "captions" in e:
        c = e["captions"]
        lines += [f"Captions ({c['n']} test images): BLEU-4 {c['bleu4']:.3f}, CIDEr-D {c['cider']:.3f}.", ""]
    if "perplexity" in e:
        lines += [f"Perplexity of the stage-2 LM on the test corpus: {e['perplexity']['perplexity']:.2f}.", ""]
    if e.get("examples"):
        lines += ["Examples:", "", markdown_table(
            ["image", "question", "answer", "truth"],
            [[f"![](eval/examples/{x['image']})", x["question"], x["prediction"], x["answer"]]
             for x in e["examples"]]), ""]
    return lines


def _bench(state: dict) -> list[str]:
    b = state["stages"].get("bench", {}).get("summary", {})
    if not b or b.get("skipped"):
        return []
    names = {"live_vocab_head": "stage-0 training tokens/s: live-vocabulary head vs full 51,200-id head",
             "one_pass_alignment": "stage-1 loss: one teacher-forced pass vs one LM pass per caption token",
             "kv_cache_generation": "generation tokens/s: KV cache vs re-running the prompt every token "
                                    "(the demo's model)",
             "kv_cache_generation_wide": "the same on a wider, deeper random Phi (see the command) and a "
                                         "~400-token prompt",
             "feature_store_loading": "stage-1 batch loading: feature store vs running the encoder live",
             "fused_gelu": "LM forward + backward: Phi's gelu_new as one fused kernel vs "
                           "transformers' Python form"}
    rows = [[names[k], f"{v:.2f}x", f"`{b['commands'][k]}`"] for k, v in b["ratios"].items()]
    return ["### Benchmarks (measured side by side in this run)", "",
            markdown_table(["what", "ratio", "command"], rows), ""]


def write_demo_report(root: Path, state: dict) -> Path:
    stages = state["stages"]
    minutes = sum(v.get("minutes", 0) for v in stages.values())
    header = [f"# mmphi demo report{' (quick run)' if state.get('quick') else ''}", "",
              f"Recipe `{state.get('recipe', 'tiny')}`. Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'no GPU'}. "
              f"Total {minutes:.1f} minutes.", "",
              markdown_table(["stage", "result"], [[k, v["line"]] for k, v in stages.items() if "line" in v]), ""]
    body = [START, "", "### What was trained", "", _training_table(root, state), "",
            "Loss curves: " + ("[CLIP](clip/loss.png) · " if (root / "clip" / "loss.png").exists() else "")
            + "[stage 0](pretrain/loss.png) · [stage 1](align/loss.png) · [stage 2](finetune/loss.png)", "",
            *_stage0(root, state), *_eval(root), *_bench(state), END, ""]
    path = root / "report.md"
    path.write_text("\n".join(header + body))
    return path
