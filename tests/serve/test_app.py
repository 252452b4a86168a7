"""The Gradio app: its chat handler directly, then the whole app in a real headless browser (system Chromium)."""

from __future__ import annotations

import socket
import warnings
import wave
from pathlib import Path

import gradio as gr
import httpx
import pytest

from mmphi.errors import MmphiError
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import Message
from mmphi.serve.app import build_app, image_examples, launch, make_responder, text_examples
from mmphi.serve.browser import CHROMIUM
from mmphi.serve.config import AppConfig


def _silence(path: Path, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * int(16000 * seconds))
    return path


def _run(respond, text="", image=None, audio=None, chat=None, history=None, max_new_tokens=12):
    with warnings.catch_warnings():  # gr.Warning outside a browser session is a Python warning
        warnings.simplefilter("ignore")
        return list(respond(text, image, audio, max_new_tokens, 0.0, chat or [], history or []))


def _bot_text(chat: list) -> str:
    return chat[-1]["content"]


@pytest.fixture(scope="module")
def respond(assistant, tiny_mm_dir):
    return make_responder(assistant, AppConfig(model=str(tiny_mm_dir)))


def test_answer_streams_in_and_joins_the_history(respond, assistant, scene_path):
    updates = _run(respond, "What colour is the circle?", image=str(scene_path))
    answers = [_bot_text(u[0]) for u in updates]
    final_chat, history = updates[-1][0], updates[-1][1]
    expected = assistant.reply([Message("user", "What colour is the circle?", image=scene_path)],
                               GenerationParams(max_new_tokens=12)).text
    assert answers[-1] == expected
    partial = [a for a in answers[:-1] if a]
    assert len(set(partial)) >= 3 and all(expected.startswith(a) for a in partial)  # growing, token by token
    assert final_chat[-2]["role"] == "user" and {"path": str(scene_path)} in final_chat[-2]["content"]
    assert [m.role for m in history] == ["user", "assistant"] and history[0].image == str(scene_path)
    assert updates[-1][4:] == ("", None, None)  # inputs cleared once answered
    follow_up = _run(respond, "And the square?", chat=final_chat, history=history)
    assert len(follow_up[-1][1]) == 4 and len(follow_up[-1][0]) == 4


def test_spoken_question_shows_what_was_heard(respond, spoken, heard_ok):
    updates = _run(respond, audio=str(spoken["wav"]), max_new_tokens=3)
    heard = next(u[2] for u in updates if isinstance(u[2], str) and u[2])
    assert heard_ok(heard, spoken["question"])
    assert f"heard: “{heard}”" in updates[-1][0][-2]["content"][-1]
    history = updates[-1][1]
    assert history[0].audio is None and history[0].text == heard  # not transcribed again next turn


def test_bad_input_is_a_message_not_a_crash(respond, tmp_path):
    not_an_image = tmp_path / "fake.png"
    not_an_image.write_bytes(b"this is text")
    for kwargs, words in [({"image": str(not_an_image)}, "not an image"),
                          ({"audio": str(_silence(tmp_path / "s.wav"))}, "no speech")]:
        updates = _run(respond, "What is it?", **kwargs)
        chat, history, _, status, *inputs = updates[-1]
        assert words in _bot_text(chat) and _bot_text(chat).startswith("Error:")
        assert history == [] and status == "error"
        assert all(i == gr.skip() for i in inputs)  # the inputs are left as they were, to be fixed
    nothing = _run(respond)
    assert len(nothing) == 1 and nothing[0][0] == []


def test_example_prompts(small_world, tmp_path):
    questions = text_examples()
    assert len(questions) == 4 and all(q.endswith(("?", ".")) for q in questions)
    rows = image_examples(small_world, tmp_path)
    assert len(rows) == 3 and len({q for q, _ in rows}) == 3
    assert all(Path(p).parent == tmp_path and Path(p).stat().st_size > 0 for _, p in rows)
    with pytest.raises(MmphiError, match="not a shapes world"):
        image_examples(tmp_path, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs the system Chromium at {CHROMIUM} (apt chromium)")
def test_app_in_a_real_browser(assistant, tiny_mm_dir, small_world, scene_path, spoken, heard_ok, tmp_path):
    from mmphi.serve.browser import ask, chromium_page, open_app

    cfg = AppConfig(model=str(tiny_mm_dir), port=_free_port(), examples=str(small_world), max_new_tokens=24,
                    max_upload_mb=1)
    url = f"http://127.0.0.1:{cfg.port}/"
    demo = launch(build_app(assistant, cfg), cfg, block=False)
    try:
        with chromium_page() as page:
            open_app(page, url)
            example = image_examples(small_world, tmp_path)[0][0]
            page.get_by_text(example).first.wait_for(timeout=20_000)  # the world's examples are offered
            first = ask(page, "What colour is the circle?", image=scene_path)
            expected = assistant.reply([Message("user", "What colour is the circle?", image=scene_path)],
                                       GenerationParams(max_new_tokens=24)).text
            assert first.answer == expected and "tokens in" in first.status
            assert len(first.partial_answers) >= 2  # the answer appeared piece by piece
            assert all(expected.startswith(p) for p in first.partial_answers)
            spoken_turn = ask(page, audio=spoken["wav"])
            assert heard_ok(spoken_turn.heard, spoken["question"]), spoken_turn.heard
            page.locator("#chat").get_by_text(spoken_turn.heard, exact=False).first.wait_for(timeout=20_000)
            failed = ask(page, "Anything?", audio=_silence(tmp_path / "silence.wav"))
            assert failed.status == "error" and "no speech" in failed.answer
            # Safe defaults: uploads over the limit are refused, and no file outside the app's temp folder is served.
            r = httpx.post(url + "gradio_api/upload", files={"files": ("big.wav", b"\0" * (2 * 2**20))})
            assert r.status_code == 413, r.text
            for private in ("/etc/passwd", tiny_mm_dir / "mmphi.json"):
                assert httpx.get(url + f"gradio_api/file={private}").status_code == 403
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
    finally:
        demo.close()
