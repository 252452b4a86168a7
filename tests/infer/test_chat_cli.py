from __future__ import annotations

import os
import subprocess
import sys

from mmphi.cli import main


def test_one_shot_chat_streams_an_answer(tiny_mm_dir, small_world, capsys):
    image = next((small_world / "test" / "images").iterdir())
    assert main(["chat", "--model", str(tiny_mm_dir), "--image", str(image), "--max-new-tokens", "5",
                 "What colour is the circle?"]) == 0
    out = capsys.readouterr().out.strip()
    assert out  # the (random) model said something


def test_one_shot_chat_with_a_bad_image_is_a_clear_error(tiny_mm_dir, tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_text("not a png")
    assert main(["chat", "--model", str(tiny_mm_dir), "--image", str(bad), "hi"]) == 1
    assert "not an image" in capsys.readouterr().err


def test_interactive_chat_reads_commands_and_questions(tiny_mm_dir, small_world):
    image = next((small_world / "test" / "images").iterdir())
    script = f"/image {image}\nWhat is this?\n/reset\nhello\n/quit\n"
    proc = subprocess.run([sys.executable, "-m", "mmphi.cli", "chat", "--model", str(tiny_mm_dir),
                           "--max-new-tokens", "4"], input=script, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MMPHI_PRINT_SUMMARY": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "(image attached to your next message)" in proc.stdout
    assert proc.stdout.count("assistant> ") == 2
