"""``mmphi``: one entry point, one verb per job.

Each verb is a typed function taking one settings dataclass, which lives in a light module next
to the verb's code (``mmphi/<area>/config.py``). Its flags are
generated from the dataclass; their defaults come from the recipe (``--recipe tiny``).
Heavy modules (torch, transformers) are imported only when a verb runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmphi.config import ConfigError, add_arguments, from_args, load_recipe, recipe_names
from mmphi.errors import MmphiError
from mmphi.quiet import quiet_library_notices

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class Verb:
    config: str  # "module:Class" of the settings dataclass (a light module: no torch import)
    target: str  # "module:function" that runs the verb
    help: str
    recipe: str = "tiny"  # the recipe --recipe defaults to

    def config_class(self) -> type[DataclassInstance]:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


VERBS: dict[str, Verb] = {
    "world": Verb("mmphi.world.config:WorldConfig", "mmphi.world.build:build_world",
                  "generate the synthetic shapes world (images, captions, conversations, corpus, speech)"),
    "corpus": Verb("mmphi.lm.config:CorpusConfig", "mmphi.lm.corpus:prepare_corpus_cli",
                   "tokenize text (a world, text/JSONL files or a streamed HF dataset) into uint16 token files"),
    "teacher": Verb("mmphi.lm.config:TeacherConfig", "mmphi.lm.teacher:teacher",
                    "sample clean pretraining text from a teacher LM (e.g. Phi-2) in batches into JSONL"),
    "pretrain": Verb("mmphi.lm.config:PretrainConfig", "mmphi.lm.pretrain:pretrain",
                     "stage 0: pretrain a Phi-architecture LM from scratch with Phi-2's tokenizer"),
    "base": Verb("mmphi.lm.config:BaseConfig", "mmphi.lm.base:make_base",
                 "make the bundled tiny Phi base (mmphi/tiny-phi-base): its own world, stage 0 with the compute "
                 "the binding needs (43,200 steps: 66 minutes on 2 CPU cores), a fresh-world text-QA check, "
                 "the model card",
                 recipe="tiny-base"),
    "clip": Verb("mmphi.vision.clip_config:ClipConfig", "mmphi.vision.clip_train:train_clip",
                 "train the tiny recipe's own small CLIP (vision + text towers) on image/caption pairs"),
    "embed": Verb("mmphi.vision.config:EmbedConfig", "mmphi.vision.embed:embed",
                  "precompute vision features for a set of images into a feature store"),
    "embed-audio": Verb("mmphi.audio.config:AudioEmbedConfig", "mmphi.audio.store:embed_audio",
                        "precompute speech features (stacked Whisper encoder states) of a world's spoken clips "
                        "into an audio feature store"),
    "align": Verb("mmphi.mm.config:AlignConfig", "mmphi.mm.stages:align",
                  "stage 1: train the projector on captions (LM frozen)"),
    "finetune": Verb("mmphi.mm.config:FinetuneConfig", "mmphi.mm.stages:finetune",
                     "stage 2: QLoRA adapters + projector on instruction conversations"),
    "speech-align": Verb("mmphi.mm.speech_config:SpeechAlignConfig", "mmphi.mm.speech:speech_align",
                         "speech stage 1: give a multimodal model an audio projector, trained on (spoken clip -> "
                         "its words) with the model frozen"),
    "speech-finetune": Verb("mmphi.mm.speech_config:SpeechFinetuneConfig", "mmphi.mm.speech:speech_finetune",
                            "speech stage 2: LoRA + audio projector on spoken questions mixed with typed ones"),
    "eval": Verb("mmphi.eval.config:EvalConfig", "mmphi.eval.run:evaluate",
                 "VQA accuracy (typed / spoken / blind), captions, ASR and perplexity on a held-out split; or a "
                 "public benchmark (--benchmark vqav2, gqa, pope, sqa, textvqa) from its official files"),
    "chat": Verb("mmphi.infer.config:ChatConfig", "mmphi.infer.chat_cli:chat",
                 "chat with a model in the terminal: one question, or interactively; --image, --audio"),
    "app": Verb("mmphi.serve.config:AppConfig", "mmphi.serve.app:run_app",
                "Gradio chat app: text, an image and audio (file or microphone) in, streamed answers out"),
    "serve": Verb("mmphi.serve.config:ServeConfig", "mmphi.serve.api:run_serve",
                  "OpenAI-compatible HTTP API: /v1/chat/completions (images, audio, streaming), /v1/models, /health"),
    "demo": Verb("mmphi.demo.config:DemoConfig", "mmphi.demo.run:run_demo",
                 "the whole journey end to end on the embedded shapes world, then a report (--recipe tiny: "
                 "about 12 minutes on 2 CPU cores; tiny-full: about 84, for the accuracy the tiny model reaches)"),
}


def _parser(verb: str | None, recipe: dict) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="mmphi",
        description="Turn a small language model into a multimodal (image + audio + text) assistant.",
        epilog="Run 'mmphi VERB --help' for the settings of a verb. Recipes: " + ", ".join(recipe_names()),
    )
    sub = root.add_subparsers(dest="verb", metavar="VERB")
    for name, v in VERBS.items():
        p = sub.add_parser(name, help=v.help, description=v.help)
        p.add_argument("--recipe", default=v.recipe,
                       help="recipe name (" + ", ".join(recipe_names()) + ") or path to a YAML file "
                            f"(default: {v.recipe})")
        if name == verb:
            add_arguments(p, v.config_class(), recipe.get(name) or {})
    return root


def _peek_recipe(argv: list[str], default: str) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default=default)
    known, _ = pre.parse_known_args(argv)
    return known.recipe


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    try:
        recipe = load_recipe(_peek_recipe(argv, VERBS[verb].recipe)) if verb in VERBS else {}
    except ConfigError as err:
        print(f"mmphi: error: {err}", file=sys.stderr)
        return 2
    parser = _parser(verb if verb in VERBS else None, recipe)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    spec = VERBS[args.verb]
    try:
        cfg = from_args(spec.config_class(), recipe, args.verb, args)
    except ConfigError as err:
        print(f"mmphi {args.verb}: error: {err}", file=sys.stderr)
        return 2
    module, func = spec.target.split(":")
    quiet_library_notices()
    try:
        if getattr(cfg, "dry_run", False):  # a plan: the verb's own module (torch, weights) is never imported
            from mmphi.plan.run import dry_run

            result = dry_run(args.verb, cfg, recipe)
        else:
            result = getattr(importlib.import_module(module), func)(cfg)
    except MmphiError as err:
        print(f"mmphi {args.verb}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nmmphi {args.verb}: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, dict) and os.environ.get("MMPHI_PRINT_SUMMARY", "1") == "1":
        print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
