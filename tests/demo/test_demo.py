"""`mmphi demo --quick`: the whole journey end to end, its report, and picking up where it stopped."""

from __future__ import annotations

import json

import pytest
from transformers import PhiForCausalLM

from mmphi.cli import main
from mmphi.demo.run import STAGES


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) in (0, None)
    state = json.loads((out / "demo.json").read_text())
    assert state["quick"] is True
    assert [s for s in STAGES if not state["stages"].get(s, {}).get("done")] == []

    # Every stage left its product behind, loadable by the libraries it is meant for.
    PhiForCausalLM.from_pretrained(out / "pretrain" / "final")
    # The tiny recipe reads images with the bundled CLIP, so the demo trains none (tiny-full trains its own).
    assert state["stages"]["clip"]["summary"] == {"skipped": True, "vision": "mmphi/tiny-clip"}
    assert not (out / "clip").exists() and state["vision"] == "mmphi/tiny-clip"
    assert (out / "finetune" / "final" / "mmphi.json").is_file()
    ev = state["stages"]["eval"]["summary"]["vqa"]
    assert {"typed", "blind"} <= set(ev)
    assert 0 <= ev["typed"]["overall"]["accuracy"] <= 1 and ev["typed"]["overall"]["n"] > 0

    bench = state["stages"]["bench"]["summary"]
    assert set(bench["ratios"]) == set(bench["commands"]), bench["details"]  # every bench/ script ran
    assert all(ratio > 0 for ratio in bench["ratios"].values())

    report = (out / "report.md").read_text()
    for heading in ("VQA", "blind", "WER", "loss", "By the number of objects in the scene", "Aims ("):
        assert heading in report, heading
    # Stages 1-2 stand on the bundled base (copied in: the model folder is self-contained); stage 0 is
    # the from-scratch demonstration, compared with that base on the same held-out tokens.
    assert json.loads((out / "finetune" / "final" / "lm" / "bundle.json").read_text())["name"] == "mmphi/tiny-phi-base"
    pre = state["stages"]["pretrain"]["summary"]
    assert pre["reference"] == "mmphi/tiny-phi-base" and pre["reference_val_loss"] < pre["final_val_loss_full_vocab"]
    assert "Stages 1-2 build on `mmphi/tiny-phi-base`" in report
    assert "`mmphi/tiny-clip`, the bundled vision tower" in report and "[CLIP](" not in report
    for png in ("pretrain/loss.png", "pretrain/loss_vs_reference.png", "finetune/loss.png"):
        assert (out / png).stat().st_size > 1000

    # A second run finds every stage done and only rewrites the report.
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out)]) in (0, None)
    printed = capsys.readouterr().out
    assert printed.count("done earlier") == len(STAGES) - 1
    assert "[report] running" in printed


def test_quick_and_full_runs_do_not_mix(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"quick": True, "seed": 0, "stages": {}}))
    assert main(["demo", "--out", str(out)]) != 0
    assert "quick demo run" in capsys.readouterr().err


def test_restart_clears_earlier_stage_outputs_but_nothing_else(tmp_path):
    from mmphi.demo.config import DemoConfig
    from mmphi.demo.run import Demo

    out = tmp_path / "demo"
    (out / "pretrain" / "checkpoints" / "step-10").mkdir(parents=True)
    (out / "features").mkdir()
    (out / "demo.json").write_text(json.dumps({"quick": False, "seed": 0, "stages": {"world": {"done": True}}}))
    (out / "my-notes.txt").write_text("keep me")
    demo = Demo(DemoConfig(out=str(out), restart=True))
    assert demo.state["stages"] == {}
    assert not (out / "pretrain").exists() and not (out / "features").exists()
    assert not (out / "demo.json").exists() and (out / "my-notes.txt").read_text() == "keep me"


def test_the_demo_runs_the_recipe_it_is_given(tmp_path, capsys):
    from mmphi.demo.config import DemoConfig
    from mmphi.demo.run import Demo
    from mmphi.lm.config import PretrainConfig

    demo = Demo(DemoConfig(out=str(tmp_path / "full"), recipe="tiny-full"))
    cfg = demo.settings("pretrain", PretrainConfig, data="w", out="o")
    assert (cfg.max_steps, cfg.max_minutes, cfg.model["hidden_size"]) == (28800, 0, 128)  # tiny's model, more steps
    assert demo.state["recipe"] == "tiny-full"
    assert demo.base_lm == str(tmp_path / "full" / "pretrain" / "final")  # tiny-full: stages 1-2 on its own stage 0
    assert demo.bundled_vision == "" and demo.vision == str(tmp_path / "full" / "clip" / "final")  # and its own CLIP
    tiny = Demo(DemoConfig(out=str(tmp_path / "tiny")))
    assert tiny.bundled_vision == tiny.vision == "mmphi/tiny-clip"  # tiny: the bundled tower, no CLIP trained

    # --recipe reaches the demo, and a folder holding another recipe's run is not silently mixed with it
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"quick": False, "seed": 0, "recipe": "tiny", "stages": {}}))
    assert main(["demo", "--recipe", "tiny-full", "--out", str(out)]) != 0
    assert "recipe 'tiny'" in capsys.readouterr().err


def test_a_recipe_without_the_models_the_demo_trains_is_refused(tmp_path, capsys):
    assert main(["demo", "--recipe", "phi2", "--out", str(tmp_path / "d")]) != 0
    assert "no clip section" in capsys.readouterr().err


@pytest.mark.parametrize(("accuracy", "verdict"), [
    ({"colour": 0.95, "shape": 0.90, "count": 0.95, "position": 0.85, "yesno": 0.851}, "met for every type."),
    ({"colour": 0.95, "shape": 0.899, "count": 0.97, "position": 0.6, "yesno": 0.9},
     "met for colour, count, yesno; not yet for shape (89.9%), position (60.0%)."),
    ({"colour": 0.5, "count": 0.5}, "met for none yet: colour (50.0%), count (50.0%)."),
    ({}, "no questions of these types in this run."),
])
def test_report_says_which_types_reach_their_aim(accuracy, verdict):
    from mmphi.demo.report import aims_line

    typed = {k: {"accuracy": v, "n": 10} for k, v in {**accuracy, "overall": 0.99}.items()}
    assert aims_line(typed).endswith(f"): {verdict}")


def test_the_tiny_demo_builds_on_the_bundled_base_and_lm_overrides_it(tmp_path, capsys):
    from mmphi.demo.config import DemoConfig
    from mmphi.demo.run import Demo
    from mmphi.lm.config import PretrainConfig

    demo = Demo(DemoConfig(out=str(tmp_path / "d")))
    assert demo.base_lm == "mmphi/tiny-phi-base" and demo.state["lm"] == "mmphi/tiny-phi-base"
    pre = demo.settings("pretrain", PretrainConfig, data="w", out="o")
    assert pre.reference == "mmphi/tiny-phi-base" and pre.max_minutes == 0  # a step budget, compared with the base
    assert Demo(DemoConfig(out=str(tmp_path / "e"), lm="some/folder")).base_lm == "some/folder"

    # a folder that holds a run on another base is not silently mixed with this one
    (tmp_path / "d" / "demo.json").write_text(json.dumps({**demo.state, "lm": "other/lm"}))
    assert main(["demo", "--out", str(tmp_path / "d")]) != 0
    assert "built on 'other/lm'" in capsys.readouterr().err
