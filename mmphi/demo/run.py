"""``mmphi demo``: the whole journey end to end on the embedded shapes world, then a report.

The stages take their settings from ``--recipe`` (``tiny``, the default, or ``tiny-full``), which must
have a section for every model the demo trains. Stages 1-2 build on the recipe's ``align.lm`` (tiny: the
bundled base ``mmphi/tiny-phi-base``; ``--lm`` overrides), and stage 0 is then a demonstration of
pretraining from scratch, compared with that base on the same held-out tokens; a recipe that names no
base (tiny-full) builds stages 1-2 on its own stage 0. Likewise stages 1-2 read images with the recipe's
``align.vision`` (tiny: the bundled ``mmphi/tiny-clip``, so no CLIP is trained), else with a CLIP the run
trains itself (tiny-full).

    world -> clip (unless bundled) -> pretrain -> embed -> align -> finetune -> eval -> bench -> report

Every stage writes its own folder under ``--out``; ``demo.json`` records the stages that finished.
Re-running skips those and resumes an interrupted stage from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmphi.config import SettingsT, build, load_recipe
from mmphi.demo.config import DemoConfig
from mmphi.errors import MmphiError

# --quick: a small world and a few steps per stage, to check the whole path in about 3 minutes.
QUICK: dict[str, dict[str, Any]] = {
    "world": {"scenes": 300, "train_scenes": 0, "describe_first": 0.0, "colour_position": 0.0, "corpus_scenes": 1500,
              "speech": 6},
    "clip": {"max_steps": 40, "batch_size": 64, "eval_every": 1000, "save_every": 1000},
    "pretrain": {"max_steps": 120, "eval_every": 1000, "save_every": 1000, "text_qa": 60, "text_qa_every": 0,
                 "compile": False},
    "align": {"max_steps": 20, "eval_every": 1000, "save_every": 1000},
    "finetune": {"max_steps": 40, "eval_every": 1000, "save_every": 1000, "val_limit": 60, "probe_steps": 10},
    "eval": {"limit": 60, "captions": 8},
}
STAGES = ("world", "clip", "pretrain", "embed", "align", "finetune", "eval", "bench", "report")
TRAINED = ("world", "clip", "pretrain", "align", "finetune")  # recipe sections the demo needs
OUTPUTS = ("world", "clip", "pretrain", "features", "align", "finetune", "eval", "bench")  # folders under --out


class Demo:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.recipe = load_recipe(cfg.recipe)
        missing = [s for s in TRAINED if not self.recipe.get(s) and not (s == "clip" and self.bundled_vision)]
        if missing:
            raise MmphiError(f"recipe {self.recipe['name']!r} has no {', '.join(missing)} section: the demo trains "
                             "a stage-0 LM, stages 1-2 and a CLIP unless bundled on the shapes world (recipes tiny, "
                             "tiny-full); run a recipe with pretrained models verb by verb (docs/gpu.md)")
        self.root = Path(cfg.out)
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file = self.root / "demo.json"
        if cfg.restart:
            self._clear()
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() and not cfg.restart else {}
        if state and state.get("quick") != cfg.quick:
            raise MmphiError(f"{self.root} holds a {'quick' if state.get('quick') else 'full'} demo run; use another "
                             "--out, the same mode, or --restart")
        recipe = self.recipe["name"]
        if state and state.get("recipe", "tiny") != recipe:
            raise MmphiError(f"{self.root} holds a demo run of recipe {state.get('recipe', 'tiny')!r}, not "
                             f"{recipe!r}; use another --out, the same --recipe, or --restart")
        self.state = state or {"quick": cfg.quick, "seed": cfg.seed, "recipe": recipe, "stages": {}}
        if state and state.get("lm", self.base_lm) != self.base_lm:
            raise MmphiError(f"{self.root} holds a demo run built on {state['lm']!r}, not {self.base_lm!r}; use "
                             "another --out, the same --lm, or --restart")
        self.state["lm"] = self.base_lm
        self.state["vision"] = self.vision

    def _clear(self) -> None:
        """Remove what earlier runs wrote here (stages would otherwise resume from their checkpoints)."""
        for name in (*OUTPUTS, "demo.json", "report.md"):
            target = self.root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # -------------------------------------------------------------- plumbing
    def settings(self, verb: str, cls: type[SettingsT], **paths: str) -> SettingsT:
        quick = QUICK.get(verb, {}) if self.cfg.quick else {}
        extra = {"seed": self.cfg.seed}
        if "resume" in {f.name for f in dataclasses.fields(cls)}:
            extra["resume"] = True  # an interrupted stage continues from its last checkpoint
        return build(cls, self.recipe.get(verb) or {}, quick, extra, paths)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage(self, name: str, fn: Callable[[], dict], line: Callable[[dict], str]) -> dict:
        done = self.state["stages"].get(name)
        if done and done.get("done"):
            print(f"[{name}] done earlier: {done['line']}")
            return done["summary"]
        print(f"[{name}] running ...", flush=True)
        start = time.perf_counter()
        summary = fn()
        minutes = (time.perf_counter() - start) / 60
        text = f"{line(summary)} ({minutes:.1f} min)"
        self.state["stages"][name] = {"done": True, "minutes": round(minutes, 2), "summary": summary, "line": text}
        self.state_file.write_text(json.dumps(self.state, indent=1, default=str))
        print(f"[{name}] {text}", flush=True)
        return summary

    # -------------------------------------------------------------- stages
    def world(self) -> dict:
        from mmphi.world.build import build_world
        from mmphi.world.config import WorldConfig

        return build_world(self.settings("world", WorldConfig, out=str(self.path("world"))))

    def clip(self) -> dict:
        if self.bundled_vision:  # as stage 0's base, the vision tower is pretrained once and shipped
            return {"skipped": True, "vision": self.bundled_vision}
        from mmphi.vision.clip_config import ClipConfig
        from mmphi.vision.clip_train import train_clip

        return train_clip(self.settings("clip", ClipConfig, data=str(self.path("world")), out=str(self.path("clip"))))

    def pretrain(self) -> dict:
        from mmphi.lm.config import PretrainConfig
        from mmphi.lm.pretrain import pretrain

        return pretrain(self.settings("pretrain", PretrainConfig, data=str(self.path("world")),
                                      out=str(self.path("pretrain"))))

    def embed(self) -> dict:
        from mmphi.vision.config import EmbedConfig
        from mmphi.vision.embed import embed

        out = {}
        for split in ("train", "val"):  # one store; test images go through the encoder live in eval
            out[split] = embed(self.settings("embed", EmbedConfig, vision=self.vision,
                                             images=str(self.path("world", split, "images")),
                                             out=str(self.path("features"))))
        return out

    @property
    def bundled_vision(self) -> str:
        """The recipe's align.vision when it is a bundled tower (tiny: mmphi/tiny-clip), which the demo then
        does not train; "" otherwise."""
        from mmphi.bundled import bundled_names

        name = (self.recipe.get("align") or {}).get("vision") or ""
        return name if name in bundled_names() else ""

    @property
    def vision(self) -> str:
        """The vision tower under stages 1-2: the recipe's align.vision, else this run's own CLIP."""
        return (self.recipe.get("align") or {}).get("vision") or str(self.path("clip", "final"))

    @property
    def base_lm(self) -> str:
        """The LM under stages 1-2: --lm, else the recipe's align.lm, else this run's stage 0."""
        return self.cfg.lm or (self.recipe.get("align") or {}).get("lm") or str(self.path("pretrain", "final"))

    def align(self) -> dict:
        from mmphi.mm.config import AlignConfig
        from mmphi.mm.stages import align

        return align(self.settings("align", AlignConfig, data=str(self.path("world")),
                                   features=str(self.path("features")), lm=self.base_lm,
                                   vision=self.vision, out=str(self.path("align"))))

    def finetune(self) -> dict:
        from mmphi.mm.config import FinetuneConfig
        from mmphi.mm.stages import finetune

        return finetune(self.settings("finetune", FinetuneConfig, data=str(self.path("world")),
                                      features=str(self.path("features")), init=str(self.path("align", "final")),
                                      out=str(self.path("finetune"))))

    def evaluate(self) -> dict:
        from mmphi.eval.config import EvalConfig
        from mmphi.eval.run import evaluate

        return evaluate(self.settings("eval", EvalConfig, model=str(self.path("finetune", "final")),
                                      data=str(self.path("world", "test")), out=str(self.path("eval"))))

    def bench(self) -> dict:
        from mmphi.demo.bench import run_benches

        if not self.cfg.bench:
            return {"skipped": True}
        return run_benches(self.root, quick=self.cfg.quick)

    def report(self) -> dict:
        from mmphi.demo.report import write_demo_report

        return {"report": str(write_demo_report(self.root, self.state))}


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def run_demo(cfg: DemoConfig) -> dict:
    d = Demo(cfg)
    d.stage("world", d.world, lambda s: f"{sum(s['splits'].values())} scenes (train/val/test "
                                        f"{'/'.join(str(v) for v in s['splits'].values())}), "
                                        f"{s['speech']} spoken test questions")
    d.stage("clip", d.clip, lambda s: (
        f"not trained here: stages 1-2 read the bundled {s['vision']} (made by `mmphi clip --bundle-into`)"
        if s.get("skipped") else f"tiny CLIP image->caption top-1 {_pct(s['retrieval']['top1'])} on val "
                                 f"(chance {_pct(s['retrieval']['chance'])}), {s['steps']} steps"))
    d.stage("pretrain", d.pretrain, lambda s: (
        f"val loss {s['initial_loss']:.2f} -> {s['final_val_loss']:.3f} (initial - 1 at step "
        f"{s['step_reached_target']}), text QA {_pct(s['text_qa']['accuracy']['overall']['accuracy'])}"
        + (f" ({s['reference']}: {_pct(s['reference_text_qa']['accuracy']['overall']['accuracy'])})"
           if "reference_text_qa" in s else "") + f", {s['tokens']:,} tokens"))
    d.stage("embed", d.embed, lambda s: f"{s['val']['store_images']} train+val images in the "
                                        "feature store")
    d.stage("align", d.align, lambda s: (
        (f"kept projector seed {s['candidates']['seed']} of {len(s['candidates']['all'])}; " if "candidates" in s
         else "") + f"val caption loss {s['val_caption_loss']:.3f} with the image vs "
        f"{s['val_caption_loss_blind']:.3f} without"))
    d.stage("finetune", d.finetune, lambda s: (
        (f"went on from projector seed {s['probes']['seed']} (best of {len(s['probes']['all'])} probes); "
         if "probes" in s else "") + f"val VQA {_pct(s['val_vqa']['image']['overall']['accuracy'])} "
        f"(blind {_pct(s['val_vqa']['blind']['overall']['accuracy'])})"))
    d.stage("eval", d.evaluate, lambda s: (
        f"test VQA typed {_pct(s['vqa']['typed']['overall']['accuracy'])}, spoken "
        f"{_pct(s['vqa']['spoken']['overall']['accuracy']) if 'spoken' in s['vqa'] else '-'}, blind "
        f"{_pct(s['vqa']['blind']['overall']['accuracy'])}; BLEU-4 {s['captions']['bleu4']:.3f}, "
        f"CIDEr {s['captions']['cider']:.3f}; ASR WER {_pct(s['asr']['wer']) if 'asr' in s else '-'}"))
    d.stage("bench", d.bench, lambda s: "skipped" if s.get("skipped") else
            ", ".join(f"{k} {v:.2f}x" for k, v in s.get("ratios", {}).items()))
    d.state["stages"].pop("report", None)  # the report always reflects the latest state
    d.stage("report", d.report, lambda s: f"written to {s['report']}")
    model = d.path("finetune", "final")
    image = sorted(d.path("world", "test", "images").iterdir())[0]
    print("\nNext:")
    print(f"  mmphi chat --model {model} --image {image} \"What colour is the circle?\"")
    print(f"  mmphi app --model {model}        # Gradio app on http://127.0.0.1:7860")
    print(f"  mmphi serve --model {model}      # OpenAI-compatible API on http://127.0.0.1:8000/v1")
    return {"report": str(d.path("report.md")), "model": str(model)}
