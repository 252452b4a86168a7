"""``scripts/gpu_journey.py`` cannot run here (no GPU, no hub): its plan is checked instead.

Every command it would run parses with mmphi's own CLI parser down to the settings; the global batch stays
the recipe's on several GPUs; a step whose output is complete is skipped; ``--plan`` prints it all offline.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmphi.cli import VERBS, _parser, _peek_recipe
from mmphi.config import from_args, load_recipe

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


journey = _load("journey")
gpu_journey = _load("gpu_journey")


def parse(argv: list[str]):
    """Parse (never run) an mmphi command line the way ``mmphi.cli.main`` does, down to its settings."""
    verb = argv[0]
    recipe = load_recipe(_peek_recipe(argv, VERBS[verb].recipe))
    return from_args(VERBS[verb].config_class(), recipe, verb, _parser(verb, recipe).parse_args(argv))


def mmphi_argv(words: list[str]) -> list[str]:
    i = words.index("mmphi.cli")
    assert words[i - 1] == "-m"
    return words[i + 1:]


@pytest.mark.parametrize("gpus", [1, 4])
def test_every_command_of_the_journey_parses_with_the_recipe_batch(tmp_path, gpus):
    layout = journey.Layout(tmp_path / "data", tmp_path / "runs")
    steps = journey.plan(layout, pretrain_steps=200, processes=gpus,
                         extra=gpu_journey.stage0_flags(200, 10_000_000))
    names = [s.name for s in steps]
    assert names == ["corpus", "pretrain", "embed-coco-train", "embed-coco-val", "embed-llava", "align", "finetune"]
    recipe = load_recipe("phi2")
    for step in steps:
        cfg = parse(step.argv)
        words = journey.command(step, journey.launcher(gpus))
        assert mmphi_argv(words) == step.argv
        assert ("--multi_gpu" in words) == (step.distributed and gpus > 1)
        if step.argv[0] in journey.TRAINING:
            assert cfg.resume, step.name  # a re-run continues
            assert gpus * cfg.batch_size * cfg.grad_accum == (recipe[step.argv[0]]["batch_size"]
                                                               * recipe[step.argv[0]]["grad_accum"])
    by = {s.name: parse(s.argv) for s in steps}
    assert by["align"].lm == "microsoft/phi-2"
    # One source of truth: the recipe names the encoder, and embed and align both use it.
    assert by["align"].vision == by["embed-coco-train"].vision == recipe["align"]["vision"] == recipe["embed"]["vision"]
    assert by["align"].max_len > 576  # room for ViT-L/14-336's image tokens (--vision takes LLaVA-1.5's encoder)
    assert by["finetune"].merge and by["finetune"].init == str(layout.run("align") / "final")
    assert by["corpus"].tokenizer == by["pretrain"].tokenizer == "microsoft/phi-2"
    assert by["pretrain"].max_steps == 200 and by["corpus"].max_tokens == 10_000_000
    for chat in (journey.chat_command(Path("m"), Path("i.jpg")), journey.serve_command(Path("m"))):
        parse(mmphi_argv(chat))


def test_vision_flag_replaces_the_recipe_encoder_in_embed_and_align(tmp_path):
    steps = journey.plan(journey.Layout(tmp_path, tmp_path), vision=journey.LLAVA15_VISION)
    visions = {s.name: parse(s.argv).vision for s in steps if s.argv[0] in ("embed", "align")}
    assert set(visions.values()) == {journey.LLAVA15_VISION} and len(visions) == 4


def test_a_gpu_count_that_does_not_divide_the_accumulation_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="global batch"):
        journey.plan(journey.Layout(tmp_path, tmp_path), processes=3)


def test_without_stage_0_the_plan_starts_at_embed(tmp_path):
    steps = journey.plan(journey.Layout(tmp_path, tmp_path), pretrain_steps=0)
    assert steps[0].name == "embed-coco-train"


def test_complete_steps_are_skipped_and_the_rest_run(tmp_path):
    layout = journey.Layout(tmp_path / "data", tmp_path / "runs")
    steps = journey.plan(layout, pretrain_steps=10)
    (layout.run("corpus")).mkdir(parents=True)
    (layout.run("corpus") / "meta.json").write_text("{}")
    (layout.run("pretrain") / "final").mkdir(parents=True)
    (layout.run("pretrain") / "summary.json").write_text("{}")
    ran: list[str] = []

    def runner(step, argv):
        ran.append(step.name)
        raise SystemExit("stop here")

    with pytest.raises(SystemExit, match="stop here"):
        journey.run_plan(steps, journey.launcher(1), runner=runner)
    assert ran == ["embed-coco-train"]


def test_plan_mode_prints_downloads_and_commands_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPTS / "gpu_journey.py"), "--plan", "--data", str(tmp_path / "d"),
                           "--out", str(tmp_path / "r"), "--gpus", "2", "--pretrain-steps", "200"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for url in gpu_journey.COCO.values():
        assert any(url in line for line in lines if line.startswith("# download"))
    assert any("liuhaotian/LLaVA-Instruct-150K" in line for line in lines)
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    verbs = [mmphi_argv(c)[0] for c in commands]
    assert verbs == ["corpus", "pretrain", "embed", "embed", "embed", "align", "finetune", "chat", "serve"]
    recipe_vision = load_recipe("phi2")["align"]["vision"]
    assert any(f"download model {recipe_vision}" in line for line in lines)  # the recipe's encoder by default
    for words in commands:
        parse(mmphi_argv(words))
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()  # nothing was run or written


def test_without_a_gpu_the_journey_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_journey, "gpu_facts", lambda: (0, 0.0))
    assert gpu_journey.main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "d").exists()

