"""Rehearse the whole phi2 journey on CPU at the real shapes, before renting a GPU.

The plan of ``scripts/gpu_journey.py`` (``scripts/journey.py``) runs here with the same hub ids
(``microsoft/phi-2``; ``openai/clip-vit-large-patch14-336``, which the journey takes with ``--vision``: its 576
image tokens make the longest sequences; then the recipe's ViT-B/32), served offline from a private Hugging Face cache
that holds stand-ins of the real shapes (``scripts/rehearsal_assets.py``: Phi-2's exact config with 2 layers,
CLIP's exact vision shapes with 2 layers, COCO / LLaVA-Instruct / RedPajama files in their official layouts),
a few steps per stage, every training verb under ``accelerate launch`` with 2 CPU processes (gloo)::

    corpus -> pretrain -> embed (COCO train, val, LLaVA) -> align -> finetune (killed, resumed) + merge
    -> chat -> serve (one request through the API); embed + align with ViT-B/32 (the recipe's encoder);
    then the same plan again: every step is complete and skipped

Asserted on the way (``scripts/rehearsal_checks.py``): the corpus keeps every text and ends each document
with EOS; stage 0's model has Phi-2's config; the feature stores hold 576 x 1024 (L/14-336) and 49 x 768
(B/32) features of every image, greyscale ones included; no example has every label masked, each answer's
labels are its tokens + EOS, padding (= EOS) is masked but a real EOS is a label; global batch = processes
x batch x accumulation in run.json and in the samples counted; the finetune run killed (SIGKILL) after its
step-2 checkpoint continues from step 3; the projector survives the merge (same tensors as the last
checkpoint, not stage 1's, and merged/ computes what final/ + adapters compute).

    nice -n 15 .venv/bin/python scripts/rehearse.py [--out DIR] [--layers 2] [--stage0-head live|full] [--json F]

Stage 0 trains a 1-layer model with the live-vocabulary head by default: the recipe's full head
(``--stage0-head full``) trains 262M embedding/head parameters, 16 GiB and ~20 s a step for two processes here.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import journey  # noqa: E402

PROCESSES, BATCH, ACCUM, STEPS = 2, 1, 2, 4  # global batch 4; checkpoints every 2 steps
FINETUNE_MAX_LEN = 768  # 576 image tokens + a few rounds: later rounds of long records are dropped
B32 = "openai/clip-vit-base-patch32"  # the recipe's encoder (what the GPU journey uses by default)
L336 = journey.LLAVA15_VISION  # 576 image tokens: the longest sequences the recipe's max_len must hold


def small_flags(head: str, steps: int = STEPS) -> dict[str, list[str]]:
    train = ["--batch-size", str(BATCH), "--grad-accum", str(ACCUM), "--max-steps", str(steps), "--log-every", "1",
             "--save-every", "2", "--warmup-steps", "1", "--eval-every", "100"]
    return {"corpus": ["--val-frac", "0.1"],
            "pretrain": [*train, "--model", '{"num_hidden_layers": 1}', "--head", head, "--seq-len", "64",
                         "--eval-batches", "1"],
            "embed": ["--batch-size", "4", "--shard-size", "8"],
            "align": [*train, "--eval-batches", "1"],
            "finetune": [*train, "--max-len", str(FINETUNE_MAX_LEN), "--eval-batches", "0", "--val-limit", "0"]}


def hub_snapshot(hf_home: Path, repo: str, kind: str = "models") -> Path:
    """A snapshot folder in the Hugging Face cache layout, so from_pretrained(repo) finds it offline."""
    folder = hf_home / "hub" / f"{kind}--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    snap = folder / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def kill_tree(root) -> None:
    """SIGKILL a process we started and all its descendants, by pid: torchrun starts each worker in a session
    of its own, so killing the launcher's process group would leave the workers running."""
    import psutil

    with contextlib.suppress(psutil.Error):
        procs = [root, *root.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)


class Runner:
    """Runs commands with their output in OUT/logs, measuring wall time and the peak RSS of the process tree."""

    def __init__(self, env: dict[str, str], logs: Path, checks: dict[str, Callable[[], dict]]):
        self.env, self.logs, self.checks = env, logs, checks
        self.stages: dict[str, dict[str, Any]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, argv: list[str], until: Callable[[], bool] | None = None) -> tuple[int, str]:
        """Run ``argv`` to its end, or until ``until()`` is true (then kill it); (exit code, its log)."""
        import psutil

        log = self.logs / f"{name}.log"
        start, peak, stop = time.perf_counter(), [0], threading.Event()
        with open(log, "a") as sink:
            sink.write(f"$ {journey.show(argv)}\n")
            sink.flush()
            proc = subprocess.Popen(argv, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
            tree = psutil.Process(proc.pid)

            def sample() -> None:  # the whole tree's RSS, every 0.2 s, also while until() blocks
                while not stop.wait(0.2):
                    with contextlib.suppress(psutil.Error):  # a child that just ended
                        peak[0] = max(peak[0], sum(p.memory_info().rss
                                                   for p in [tree, *tree.children(recursive=True)]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                while proc.poll() is None and not (until is not None and until()):
                    time.sleep(0.25)
            finally:
                if proc.poll() is None:
                    kill_tree(tree)
                    proc.wait()
                stop.set()
                sampler.join()
        row = self.stages.setdefault(name, {"seconds": 0.0, "peak_gib": 0.0})
        row["seconds"] += time.perf_counter() - start
        row["peak_gib"] = max(row["peak_gib"], peak[0] / 2**30)
        return proc.returncode, log.read_text()

    def __call__(self, step: journey.Step, argv: list[str]) -> None:
        code, log = self.run(step.name, argv)
        if code != 0:
            raise SystemExit(f"{step.name} failed (exit {code}):\n{log[-4000:]}")
        self.check(step.name)

    def check(self, name: str) -> None:
        if name in self.checks:
            self.stages.setdefault(name, {})["checked"] = self.checks[name]()
            print(f"[rehearsal] {name}: checks passed {json.dumps(self.stages[name]['checked'])}", flush=True)


def kill_then_resume(runner: Runner, step: journey.Step, argv: list[str]) -> None:
    """Kill the run (SIGKILL to all its processes) once its step-2 checkpoint exists, then run it again."""
    from rehearsal_checks import resumed

    ckpt = step.output / "checkpoints" / "step-2"
    code, _ = runner.run(step.name, argv, until=ckpt.is_dir)
    assert ckpt.is_dir() and not (step.output / "summary.json").exists(), f"{step.name} was not killed mid-run"
    killed = [r for r in map(json.loads, (step.output / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    (runner.logs / f"{step.name}.log").write_text("")  # the restarted run's log alone
    code, log = runner.run(step.name, argv)
    if code != 0:
        raise SystemExit(f"{step.name} failed after the restart (exit {code}):\n{log[-4000:]}")
    runner.stages[step.name]["resume"] = resumed(step.output, log, killed, 2, STEPS)
    runner.check(step.name)


def serve_request(runner: Runner, merged: Path, image: Path) -> dict:
    """Start ``mmphi serve``, send one chat completion with an image, stop the server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done: dict[str, Any] = {}

    def client() -> bool:  # polled by Runner.run; True (stop the server) once answered or failed
        if done:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
        url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
        body = {"model": "mmphi", "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe this image."}, {"type": "image_url", "image_url": {"url": url}}]}]}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                done.update(status=r.status, reply=json.loads(r.read()))
        except urllib.error.HTTPError as err:
            done.update(status=err.code, error=err.read().decode(errors="replace"))
        return True

    deadline = time.time() + 600
    runner.run("serve", journey.serve_command(merged, port), until=lambda: client() or time.time() > deadline)
    assert done.get("status") == 200, f"no answer from the API: {done}"
    reply = done["reply"]
    msg, usage = reply["choices"][0]["message"], reply["usage"]
    assert reply["object"] == "chat.completion" and msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert usage["prompt_tokens"] > 576 and 0 < usage["completion_tokens"] <= 8, usage  # the image was in the prompt
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "finish_reason": reply["choices"][0]["finish_reason"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/mmphi-rehearsal", help="work folder (emptied first)")
    ap.add_argument("--layers", type=int, default=2, help="layers of the Phi-2 stand-in under stages 1-2")
    ap.add_argument("--stage0-head", choices=("live", "full"), default="live", help="stage 0's LM head (see above)")
    ap.add_argument("--json", help="also write the report to this file")
    args = ap.parse_args()
    began = time.perf_counter()
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    hf_home = out / "hf"
    os.environ.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MMPHI_PRINT_SUMMARY="0",
                      TOKENIZERS_PARALLELISM="false",
                      PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    import rehearsal_assets as assets  # after HF_HOME / offline mode are set: transformers reads them on import
    import rehearsal_checks as checks

    t0 = time.perf_counter()
    assets.make_phi2(hub_snapshot(hf_home, journey.LM), layers=args.layers)
    assets.make_clip(hub_snapshot(hf_home, L336), L336)
    assets.make_clip(hub_snapshot(hf_home, B32), B32)
    layout = journey.Layout(out / "data", out / "runs")
    names = assets.make_coco(layout.coco)
    assets.make_llava(layout.llava, names["train2017"])
    (layout.data / "redpajama").mkdir(parents=True)
    assets.make_redpajama(layout.data / "redpajama" / "sample.jsonl")
    made = {"seconds": time.perf_counter() - t0}
    print(f"[rehearsal] stand-ins made in {made['seconds']:.0f} s under {out}", flush=True)

    steps = journey.plan(layout, vision=L336, pretrain_steps=STEPS, processes=PROCESSES,
                         extra=small_flags(args.stage0_head))
    run = layout.run
    n_train, n_val = len(names["train2017"]), len(names["val2017"])
    arith = (PROCESSES, BATCH, ACCUM, STEPS)
    chk: dict[str, Callable[[], dict]] = {
        "corpus": lambda: checks.corpus(run("corpus"), layout.corpus_files()),
        "pretrain": lambda: {**checks.pretrain(run("pretrain"), 1), **checks.batch_arithmetic(run("pretrain"), *arith)},
        "embed-coco-val": lambda: checks.store(run("features"), 576, 1024, 336, n_train + n_val),
        "align": lambda: {**checks.batch_arithmetic(run("align"), *arith),
                          **checks.stage_data(run("align") / "final", layout.captions("train"), layout.llava, 1024,
                                              FINETUNE_MAX_LEN, run("features"))},
        "finetune": lambda: {**checks.batch_arithmetic(run("finetune"), *arith),
                             **checks.projector_survives_merge(run("finetune"), run("align") / "final",
                                                               run("features"), layout.llava)},
    }
    runner = Runner(dict(os.environ), out / "logs", chk)
    accelerate = journey.launcher(PROCESSES)

    def run_step(step: journey.Step, argv: list[str]) -> None:
        (kill_then_resume if step.name == "finetune" else Runner.__call__)(runner, step, argv)

    journey.run_plan(steps, accelerate, runner=run_step)
    merged = run("finetune") / "merged"
    image = layout.images("val") / names["val2017"][0]
    code, log = runner.run("chat", journey.chat_command(merged, image, max_new_tokens=8))
    assert code == 0, log[-3000:]
    runner.stages["chat"]["checked"] = {"reply": log.strip().splitlines()[-1][:60] if log.strip() else ""}
    runner.stages["serve"]["checked"] = serve_request(runner, merged, image)

    b32 = journey.Layout(layout.data, out / "runs-b32")
    flags = small_flags(args.stage0_head, steps=2)
    b32_steps = [s for s in journey.plan(b32, vision=B32, processes=PROCESSES, extra=flags)
                 if s.name in ("embed-coco-train", "embed-coco-val", "align")]
    for s in b32_steps:
        s.name += "-b32"
    runner.checks.update({
        "embed-coco-val-b32": lambda: checks.store(b32.run("features"), 49, 768, 224, n_train + n_val),
        "align-b32": lambda: checks.batch_arithmetic(b32.run("align"), PROCESSES, BATCH, ACCUM, 2)})
    journey.run_plan(b32_steps, accelerate, runner=runner)

    again = journey.run_plan(steps, accelerate, runner=run_step)  # the GPU journey's re-run: nothing left to do
    assert all(r["skipped"] for r in again), [r["step"] for r in again if not r["skipped"]]
    report(runner, made, time.perf_counter() - began, args)


def report(runner: Runner, made: dict, total: float, args: argparse.Namespace) -> None:
    print(f"\nrehearsal of the phi2 journey: {PROCESSES} CPU processes, global batch {PROCESSES * BATCH * ACCUM}, "
          f"{STEPS} steps per training stage, Phi-2 stand-in with {args.layers} layers, stage-0 head "
          f"{args.stage0_head}")
    print(f"{'stage':22s} {'wall s':>8s} {'peak GiB':>9s}  checks")
    print(f"{'stand-ins':22s} {made['seconds']:8.1f} {'':>9s}")
    for name, row in runner.stages.items():
        print(f"{name:22s} {row.get('seconds', 0):8.1f} {row.get('peak_gib', 0):9.2f}  "
              f"{'ok' if 'checked' in row else ''}{' (killed at step 2, resumed)' if 'resume' in row else ''}")
    print(f"total {total / 60:.1f} min; every step was complete and skipped on the second run")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": runner.stages, "stand_ins_s": made["seconds"],
                                               "total_s": total, "settings": vars(args)}, indent=1, default=str))


if __name__ == "__main__":
    main()
