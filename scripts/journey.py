"""The phi2 journey as a list of mmphi commands: one plan for the GPU run and for its CPU rehearsal.

``scripts/gpu_journey.py`` runs this plan on real models and data (hub ids, downloaded files);
``scripts/rehearse.py`` runs the same plan, with the same hub ids, against stand-ins of the real shapes in a
local Hugging Face cache, a few steps per stage. A step is skipped when its output is complete (a
training verb's ``summary.json``, the corpus' ``meta.json``, every image of the source in the feature
store), and training verbs always run with ``--resume``, so re-running the plan continues it.

Data layout (what the downloads unpack to, and what the rehearsal writes)::

    DATA/coco/train2017/*.jpg, DATA/coco/val2017/*.jpg
    DATA/coco/annotations/captions_train2017.json, captions_val2017.json
    DATA/llava/llava_instruct_150k.json
    DATA/redpajama/**/*.jsonl
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LM = "microsoft/phi-2"
RECIPE = "phi2"
LLAVA15_VISION = "openai/clip-vit-large-patch14-336"  # LLaVA-1.5's encoder (576 patch tokens): --vision takes it
TRAINING = ("pretrain", "align", "finetune")


@dataclass
class Step:
    name: str  # unique in the plan: "corpus", "embed-coco-train", "align", ...
    argv: list[str]  # the mmphi arguments, verb first
    distributed: bool  # run under accelerate launch (training verbs and embed)
    output: Path  # the folder the step writes
    done: Callable[[], bool] = field(repr=False, default=lambda: False)


@dataclass
class Layout:
    data: Path
    runs: Path

    @property
    def coco(self) -> Path:
        return self.data / "coco"

    def captions(self, split: str) -> Path:
        return self.coco / "annotations" / f"captions_{split}2017.json"

    def images(self, split: str) -> Path:
        return self.coco / f"{split}2017"

    @property
    def llava(self) -> Path:
        return self.data / "llava" / "llava_instruct_150k.json"

    def corpus_files(self) -> list[Path]:
        return sorted((self.data / "redpajama").rglob("*.jsonl"))

    def run(self, name: str) -> Path:
        return self.runs / name


def _summary_done(out: Path) -> Callable[[], bool]:
    return lambda: (out / "summary.json").is_file() and (out / "final").is_dir()


def _embedded(images: Path, root: Path, store: Path) -> Callable[[], bool]:
    """Every image the source names is in the store (a file that could not be read counts as done only when
    the store's report lists it)."""

    def done() -> bool:
        if not (store / "store.json").is_file():
            return False
        from mmphi.vision import store as fs
        from mmphi.vision.embed import read_source

        present = set(fs.key_roots(store))
        report = store / "report.json"
        skipped = {s["key"] for s in json.loads(report.read_text())["skipped"]} if report.is_file() else set()
        return all(k in present or k in skipped for k in read_source(images, root).keys)

    return done


def recipe_vision() -> str:
    """The vision encoder the recipe names: one source of truth for embed and align (they must agree)."""
    from mmphi.config import load_recipe

    recipe = load_recipe(RECIPE)
    embed, align = (recipe.get(v, {}).get("vision") for v in ("embed", "align"))
    if not embed or embed != align:
        raise SystemExit(f"recipe {RECIPE}: embed.vision ({embed}) and align.vision ({align}) must name the same "
                         "encoder")
    return embed


def plan(layout: Layout, *, lm: str = LM, vision: str = "", pretrain_steps: int = 0, processes: int = 1,
         extra: dict[str, list[str]] | None = None) -> list[Step]:
    """The journey's steps in order. ``vision`` "" is the recipe's encoder; ``pretrain_steps`` 0 leaves out stage
    0 (and its corpus); ``processes`` divides the recipe's gradient accumulation so the global batch stays the
    recipe's; ``extra`` appends flags to a step (by name, or to every step of a verb by the verb's name)."""
    from mmphi.config import load_recipe

    recipe = load_recipe(RECIPE)
    vision = vision or recipe_vision()
    extra = extra or {}
    features = layout.run("features")
    steps: list[Step] = []

    def accum(verb: str) -> list[str]:
        total = int(recipe[verb]["grad_accum"])
        if total % processes:
            raise SystemExit(f"{processes} processes do not divide {verb}'s gradient accumulation {total}: "
                             "the global batch would change")
        return ["--grad-accum", str(total // processes)] if processes > 1 else []

    def add(name: str, argv: list[str], output: Path, done: Callable[[], bool], distributed: bool) -> None:
        verb = argv[0]
        flags = [*argv, *(accum(verb) if verb in TRAINING else []), *(["--resume"] if verb in TRAINING else [])]
        own = extra.get(name, []) if name != verb else []
        steps.append(Step(name, [*flags, *extra.get(verb, []), *own], distributed, output, done))

    if pretrain_steps:
        corpus = layout.run("corpus")
        files = ",".join(str(f) for f in layout.corpus_files()) or str(layout.data / "redpajama" / "*.jsonl")
        add("corpus", ["corpus", "--recipe", RECIPE, "--data", files, "--out", str(corpus)], corpus,
            lambda: (corpus / "meta.json").is_file(), distributed=False)
        out = layout.run("pretrain")
        add("pretrain", ["pretrain", "--recipe", RECIPE, "--data", str(corpus), "--out", str(out),
                         "--max-steps", str(pretrain_steps)], out, _summary_done(out), distributed=True)
    sources = [("embed-coco-train", layout.captions("train"), layout.images("train")),
               ("embed-coco-val", layout.captions("val"), layout.images("val")),
               ("embed-llava", layout.llava, layout.images("train"))]
    for name, images, root in sources:
        add(name, ["embed", "--recipe", RECIPE, "--vision", vision, "--images", str(images), "--image-root",
                   str(root), "--out", str(features)], features, _embedded(images, root, features), distributed=True)
    align = layout.run("align")
    add("align", ["align", "--recipe", RECIPE, "--lm", lm, "--vision", vision, "--data", str(layout.captions("train")),
                  "--val-data", str(layout.captions("val")), "--features", str(features), "--out", str(align)],
        align, _summary_done(align), distributed=True)
    finetune = layout.run("finetune")
    add("finetune", ["finetune", "--recipe", RECIPE, "--init", str(align / "final"), "--data", str(layout.llava),
                     "--features", str(features), "--out", str(finetune), "--merge"],
        finetune, lambda: _summary_done(finetune)() and (finetune / "merged" / "mmphi.json").is_file(),
        distributed=True)
    return steps


def launcher(processes: int) -> list[str]:
    """``accelerate launch`` for ``processes`` processes. On a machine without GPUs, ``--multi_gpu`` starts gloo
    processes (accelerate's ``--cpu`` flag would start only one)."""
    # --mixed_precision no: mmphi chooses itself (--precision auto: bf16 autocast on CUDA, fp32 on CPU).
    words = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        words.append("--multi_gpu")
    return [*words, "-m", "mmphi.cli"]


def command(step: Step, accelerate: list[str]) -> list[str]:
    return [*accelerate, *step.argv] if step.distributed else [sys.executable, "-m", "mmphi.cli", *step.argv]


def chat_command(merged: Path, image: Path, max_new_tokens: int = 32) -> list[str]:
    return [sys.executable, "-m", "mmphi.cli", "chat", "--recipe", RECIPE, "--model", str(merged), "--image",
            str(image), "--max-new-tokens", str(max_new_tokens), "Describe this image."]


def serve_command(merged: Path, port: int = 8000) -> list[str]:
    return [sys.executable, "-m", "mmphi.cli", "serve", "--recipe", RECIPE, "--model", str(merged), "--port", str(port)]


def show(words: list[str]) -> str:
    return shlex.join(words)


def run_plan(steps: list[Step], accelerate: list[str], env: dict[str, str] | None = None,
             runner: Callable[[Step, list[str]], None] | None = None) -> list[dict]:
    """Run the steps whose output is not complete, in order; stop at the first failure (SystemExit).

    ``runner(step, argv)`` replaces the plain subprocess call (the rehearsal measures time and memory with it).
    Returns one record per step: its name, whether it was skipped, the command.
    """
    records = []
    for step in steps:
        argv = command(step, accelerate)
        if step.done():
            print(f"[journey] {step.name}: complete, skipped ({step.output})", flush=True)
            records.append({"step": step.name, "skipped": True, "command": show(argv)})
            continue
        print(f"[journey] {step.name}: {show(argv)}", flush=True)
        if runner is not None:
            runner(step, argv)
        elif (code := subprocess.run(argv, env=env).returncode) != 0:
            raise SystemExit(f"[journey] {step.name} failed (exit {code}); run the same command again: "
                             "finished steps are skipped, this one resumes")
        if not step.done():
            raise SystemExit(f"[journey] {step.name} ended but its output in {step.output} is not complete")
        records.append({"step": step.name, "skipped": False, "command": show(argv)})
    return records
