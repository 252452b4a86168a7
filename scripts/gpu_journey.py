"""The whole phi2 journey in one command on a GPU machine: downloads, every stage, resumable.

    .venv/bin/python scripts/gpu_journey.py [--data data] [--out runs/phi2] [--gpus N] [--vision HUB_ID]
        [--pretrain-steps auto|N] [--corpus-tokens N] [--serve] [--plan]

1. Downloads, each skipped when already there: ``microsoft/phi-2`` and the vision encoder (default: the
   recipe's, ``configs/phi2.yaml``'s ``openai/clip-vit-base-patch32``; ``--vision
   openai/clip-vit-large-patch14-336`` takes LLaVA-1.5's) into the Hugging Face cache with ``huggingface_hub``;
   ``llava_instruct_150k.json`` of the dataset ``liuhaotian/LLaVA-Instruct-150K``; COCO 2017 train and val images
   and captions from images.cocodataset.org (zips fetched with HTTP range requests, so an interrupted download
   continues, then unpacked); with stage 0, the JSONL files of ``togethercomputer/RedPajama-Data-1T-Sample``.
2. The plan of ``scripts/journey.py``: corpus + stage 0 (a short demonstration from scratch, only where it fits:
   ``--pretrain-steps auto`` runs 200 steps when every GPU has 70 GiB or more, else skips it), embed (COCO train,
   val, LLaVA), align, finetune + merge, each under ``accelerate launch`` on ``--gpus`` processes with the
   recipe's global batch (its gradient accumulation divided by the number of GPUs). A step whose output is
   complete is skipped and a training stage resumes from its last checkpoint, so the same command continues
   after any interruption.
3. A one-shot ``mmphi chat`` on a COCO val image, then the ``mmphi serve`` command (run with ``--serve``).

``--plan`` prints every download and command (and which steps are complete) and runs nothing: no network,
no GPU needed. ``scripts/rehearse.py`` runs the same plan on CPU against stand-ins of the same shapes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import journey  # noqa: E402

COCO = {"train2017": "http://images.cocodataset.org/zips/train2017.zip",
        "val2017": "http://images.cocodataset.org/zips/val2017.zip",
        "annotations": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"}
LLAVA = ("liuhaotian/LLaVA-Instruct-150K", "llava_instruct_150k.json")
REDPAJAMA = "togethercomputer/RedPajama-Data-1T-Sample"
MODEL_FILES = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "flax_model*", "tf_model*", "rust_model*"]  # not fetched
DEMO_STEPS, BIG_GPU_GIB = 200, 70


def downloads(layout: journey.Layout, vision: str, corpus: bool) -> list[tuple[str, str, Path]]:
    """(what, source, where it lands) of every download, in order."""
    items = [("model", journey.LM, Path("HF cache")), ("model", vision, Path("HF cache")),
             ("dataset file", f"{LLAVA[0]}:{LLAVA[1]}", layout.llava)]
    items += [("zip", url, layout.coco / name) for name, url in COCO.items()]
    if corpus:
        items.append(("dataset JSONL", REDPAJAMA, layout.data / "redpajama"))
    return items


def fetch_url(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest``, continuing a ``.part`` file left by an interrupted run."""
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=60) as r, open(part, "ab" if r.status == 206 else "wb") as f:
        shutil.copyfileobj(r, f, length=1 << 22)
    part.rename(dest)
    return dest


def fetch(layout: journey.Layout, vision: str, corpus: bool) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    for what, source, where in downloads(layout, vision, corpus):
        print(f"[journey] download {what} {source} -> {where}", flush=True)
        if what == "model":
            snapshot_download(source, ignore_patterns=MODEL_FILES)
        elif what == "dataset file":
            repo, name = source.split(":")
            hf_hub_download(repo, name, repo_type="dataset", local_dir=where.parent)
        elif what == "zip":
            marker = layout.coco / f".{where.name}.unpacked"
            if not marker.exists():
                archive = fetch_url(source, layout.data / "downloads" / Path(source).name)
                with zipfile.ZipFile(archive) as z:
                    z.extractall(layout.coco)  # train2017/, val2017/ or annotations/
                marker.touch()
                archive.unlink()  # 19 GB for train2017
        else:
            snapshot_download(source, repo_type="dataset", allow_patterns=["*.jsonl"], local_dir=where)


def gpu_facts() -> tuple[int, float]:
    """(GPUs, smallest GPU memory in GiB); (0, 0) without CUDA."""
    try:
        import torch
    except ImportError:
        return 0, 0.0
    if not torch.cuda.is_available():
        return 0, 0.0
    n = torch.cuda.device_count()
    return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n)) / 2**30


def stage0_flags(steps: int, corpus_tokens: int) -> dict[str, list[str]]:
    """A short stage 0 saves and evaluates more often than the recipe's 20,000-step run."""
    every = str(max(10, steps // 4))
    return {"corpus": ["--max-tokens", str(corpus_tokens)],
            "pretrain": ["--save-every", every, "--eval-every", every]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", help="where the datasets go (coco/, llava/, redpajama/)")
    ap.add_argument("--out", default="runs/phi2", help="run folders of every stage")
    ap.add_argument("--gpus", type=int, help="processes for accelerate launch (default: every visible GPU)")
    ap.add_argument("--vision", default="",
                    help="vision encoder (default: the recipe's, configs/phi2.yaml; LLaVA-1.5's: "
                         f"{journey.LLAVA15_VISION})")
    ap.add_argument("--pretrain-steps", default="auto",
                    help=f"stage 0 steps from scratch; 0 skips it; auto = {DEMO_STEPS} on GPUs of {BIG_GPU_GIB} GiB+")
    ap.add_argument("--corpus-tokens", type=int, default=0,
                    help="cap on corpus train tokens; 0 = what stage 0's steps read, x1.2")
    ap.add_argument("--serve", action="store_true", help="start the API on the merged model at the end")
    ap.add_argument("--plan", action="store_true", help="print the downloads and commands, run nothing")
    args = ap.parse_args(argv)
    layout = journey.Layout(Path(args.data), Path(args.out))
    args.vision = args.vision or journey.recipe_vision()
    gpus, gib = (args.gpus, 0.0) if args.gpus else gpu_facts()
    if not gpus and not args.plan:
        print("gpu_journey: no CUDA GPU visible (scripts/rehearse.py rehearses the journey on CPU)", file=sys.stderr)
        return 2
    gpus = gpus or 1
    if args.pretrain_steps == "auto":
        steps = DEMO_STEPS if (gib or gpu_facts()[1]) >= BIG_GPU_GIB else 0
        if not steps:
            print(f"[journey] stage 0 skipped: training the 2.78B model from scratch needs GPUs of {BIG_GPU_GIB} "
                  "GiB or more (or FSDP through `accelerate config`); --pretrain-steps N runs it anyway",
                  file=sys.stderr)
    else:
        steps = int(args.pretrain_steps)
    from mmphi.config import load_recipe

    pre = load_recipe(journey.RECIPE)["pretrain"]
    tokens = args.corpus_tokens or int(1.2 * steps * pre["batch_size"] * pre["grad_accum"] * pre["seq_len"])

    def plan() -> list[journey.Step]:  # after the downloads: the corpus step names the JSONL files there are
        return journey.plan(layout, vision=args.vision, pretrain_steps=steps, processes=gpus,
                            extra=stage0_flags(steps, tokens))

    accelerate = journey.launcher(gpus)
    merged = layout.run("finetune") / "merged"
    image = layout.images("val") / "000000000139.jpg"  # the first image of COCO val2017
    if args.plan:
        for what, source, where in downloads(layout, args.vision, corpus=steps > 0):
            print(f"# download {what} {source} -> {where}")
        for step in plan():
            print(f"# {step.name}{' (complete: skipped)' if step.done() else ''}")
            print(journey.show(journey.command(step, accelerate)))
        print("# chat\n" + journey.show(journey.chat_command(merged, image)))
        print("# serve\n" + journey.show(journey.serve_command(merged)))
        return 0
    fetch(layout, args.vision, corpus=steps > 0)
    journey.run_plan(plan(), accelerate)
    subprocess.run(journey.chat_command(merged, image), check=True)
    serve = journey.serve_command(merged)
    print(f"[journey] done. Serve the model with:\n  {journey.show(serve)}", flush=True)
    if args.serve:
        os.execv(serve[0], serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
