"""Hugging Face Spaces entry point: push this repository as a Gradio Space and it serves the app.

    MMPHI_MODEL=runs/demo/finetune/final python app.py     # locally: http://127.0.0.1:7860 (bound to 0.0.0.0)

Spaces run ``app.py`` and route the public URL to port 7860, hence 0.0.0.0:7860 here (``mmphi app``
itself binds 127.0.0.1). The model is a folder in the repository (commit it with Git LFS) or a Hub
repo id (``org/name``). Without a model the Space shows a page saying what is missing, not a traceback.
MMPHI_ASR_PROMPT: words to expect in speech (default: the shapes world's, from the tiny recipe).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import gradio as gr

from mmphi.config import load_recipe
from mmphi.quiet import quiet_library_notices
from mmphi.serve.app import build_app, error_app, launch
from mmphi.serve.config import AppConfig

# The model served when MMPHI_MODEL is not set: the stage-2 output of `mmphi demo` (its default --out).
DEFAULT_MODEL = "runs/demo/finetune/final"
# Shapes-world folder whose test images become clickable examples, if it is there (also from `mmphi demo`).
DEFAULT_EXAMPLES = "runs/demo/world"
HOST, PORT = "0.0.0.0", 7860  # the Spaces convention
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def build_demo() -> tuple[gr.Blocks, AppConfig]:
    """The app on the configured model, or an error page explaining why it cannot run."""
    quiet_library_notices()
    model = os.environ.get("MMPHI_MODEL", DEFAULT_MODEL)
    examples = os.environ.get("MMPHI_EXAMPLES", DEFAULT_EXAMPLES)
    asr_prompt = os.environ.get("MMPHI_ASR_PROMPT", (load_recipe("tiny").get("app") or {}).get("asr_prompt", ""))
    cfg = AppConfig(model=model, host=HOST, port=PORT, asr_prompt=asr_prompt,
                    examples=examples if (Path(examples) / "test" / "instruct.json").is_file() else "")
    if not Path(model).is_dir() and not _HUB_ID.match(model):
        return error_app(
            f"the model folder `{model}` does not exist. Train one with `mmphi demo` (it writes "
            f"`{DEFAULT_MODEL}`) and commit it, or set the `MMPHI_MODEL` variable (Space settings → "
            "Variables) to a model folder or a Hugging Face repo id."), cfg
    try:
        from mmphi.infer.assistant import Assistant

        assistant = Assistant.load(model, asr_model=cfg.asr_model or None, asr_prompt=cfg.asr_prompt or None)
    except Exception as err:  # a broken or incomplete model folder: say so on the page
        return error_app(f"the model `{model}` could not be loaded: {type(err).__name__}: {err}"), cfg
    return build_app(assistant, cfg), cfg


if __name__ == "__main__":
    demo, cfg = build_demo()
    launch(demo, cfg)
