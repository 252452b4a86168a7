"""The root ``app.py`` (Hugging Face Space entry point): a page that explains a missing model, else the app."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gradio as gr
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def space_app():
    spec = importlib.util.spec_from_file_location("space_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown(demo: gr.Blocks) -> str:
    return " ".join(str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown))


def test_missing_model_gives_an_error_page(space_app, monkeypatch, tmp_path):
    monkeypatch.setenv("MMPHI_MODEL", str(tmp_path / "no-such-model"))
    demo, cfg = space_app.build_demo()
    assert (cfg.host, cfg.port) == ("0.0.0.0", 7860)
    assert "does not exist" in _markdown(demo) and "MMPHI_MODEL" in _markdown(demo)
    assert not any(isinstance(b, gr.Chatbot) for b in demo.blocks.values())


def test_broken_model_folder_gives_an_error_page(space_app, monkeypatch, tmp_path):
    (tmp_path / "broken").mkdir()
    monkeypatch.setenv("MMPHI_MODEL", str(tmp_path / "broken"))
    demo, _ = space_app.build_demo()
    assert "could not be loaded" in _markdown(demo)


def test_model_folder_gives_the_app(space_app, monkeypatch, tiny_mm_dir, small_world):
    monkeypatch.setenv("MMPHI_MODEL", str(tiny_mm_dir))
    monkeypatch.setenv("MMPHI_EXAMPLES", str(small_world))
    demo, cfg = space_app.build_demo()
    assert cfg.examples == str(small_world)
    assert any(isinstance(b, gr.Chatbot) for b in demo.blocks.values())
