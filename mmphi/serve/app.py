"""``mmphi app``: a Gradio chat app around the engine: text, an image, audio (file or microphone) in; text out.

    mmphi app --model runs/demo/finetune/final --examples runs/demo/world

Answers stream in as they are generated; what was heard in the audio is shown (in the chat and in
the "Heard" box). The conversation continues until "Clear": follow-up questions are about the
last image sent. Safe defaults: it binds 127.0.0.1, refuses uploads over ``max_upload_mb``, serves
no files but its own uploads (no ``allowed_paths``), and keeps a bounded queue in front of the
model, which answers up to ``max_batch`` users at once, decoded together in one batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from mmphi.errors import MmphiError
from mmphi.infer.assistant import Assistant, Reply
from mmphi.infer.inputs import Message
from mmphi.serve.config import AppConfig

logger = logging.getLogger(__name__)
TITLE = "mmphi: a small multimodal assistant"
MAX_SLIDER_TOKENS = 512


# ---------------------------------------------------------------------------- example prompts
def text_examples(n: int = 4) -> list[str]:
    """Shapes-world questions (the kinds the tiny model is trained on), from the world's own generator."""
    import numpy as np

    from mmphi.world.language import question
    from mmphi.world.scenes import sample_scene

    rng = np.random.default_rng(7)
    scene = sample_scene(rng)
    return [question(kind, scene, rng)[0] for kind in ("colour", "count", "yesno", "describe")[:n]]


def image_examples(world: str | Path, out_dir: Path, n: int = 3) -> list[list[str]]:
    """[question, image] pairs from a shapes world's test split, one question type each.

    The images are copied into ``out_dir`` (the app's own temp folder): Gradio serves files only from
    its temp folder and the working directory, and the app grants it no other paths.
    """
    root = Path(world)
    records_path = root / "test" / "instruct.json"
    if not records_path.is_file():
        raise MmphiError(f"examples: {root} is not a shapes world (no test/instruct.json); "
                         "make one with 'mmphi world' or leave --examples empty")
    rows: list[list[str]] = []
    kinds_used: set[str] = set()
    for rec in json.loads(records_path.read_text()):
        turn = next((t for t, kind in enumerate(rec["types"]) if kind != "describe" and kind not in kinds_used), None)
        if turn is None:
            continue
        kinds_used.add(rec["types"][turn])
        src = root / "test" / "images" / rec["image"]
        dst = out_dir / f"example-{len(rows)}{src.suffix}"
        shutil.copyfile(src, dst)
        rows.append([rec["conversations"][2 * turn]["value"].replace("<image>", "").strip(), str(dst)])
        if len(rows) == n:
            break
    return rows


# What the "Heard" box says on the embedding route, which reads the speech without transcribing it.
EMBED_HEARD = "(read as speech embeddings through the audio projector: no transcript)"


# ---------------------------------------------------------------------------- the chat handler
def _user_bubble(text: str, image: str | None, audio: str | None, heard: str | None) -> dict[str, Any]:
    parts: list[Any] = [{"path": p} for p in (image, audio) if p]
    words = text
    if heard is not None:
        words = f"{text}\n\n(heard: “{heard}”)".strip()  # no emoji: headless browsers often lack the font
    if words:
        parts.append(words)
    return {"role": "user", "content": parts}


def _status(reply: Reply) -> str:
    first = f", first token after {reply.time_to_first_token_s:.2f} s" if reply.time_to_first_token_s else ""
    line = f"{reply.tokens} tokens in {reply.elapsed_s:.2f} s{first}"
    if reply.finish_reason == "length":
        line += " (stopped at the token limit)"
    return "  \n".join([line, *(f"note: {w}" for w in reply.warnings)])


def make_responder(assistant: Assistant, cfg: AppConfig):
    """The streaming handler: yields (chat, history, heard, status, text, image, audio) as the answer grows.

    Each update is a new chat list (never the previous one mutated), so every yielded state stays as it was.
    """

    def respond(text: str, image: str | None, audio: str | None, max_new_tokens: float, temperature: float,
                chat: list, history: list[Message]) -> Iterator[tuple]:
        keep = (gr.skip(), gr.skip(), gr.skip())  # inputs stay until the answer is done (fixable after an error)
        text = (text or "").strip()
        if not text and not image and not audio:
            gr.Warning("Type a question, or add an image or audio.")
            yield chat, history, gr.skip(), gr.skip(), *keep
            return
        chat = [*chat, _user_bubble(text, image, audio, None), {"role": "assistant", "content": ""}]
        heard: str | None = None
        answer, reply = "", None
        yield chat, history, "", "thinking…", *keep
        try:
            # The configured knobs, with the two sliders over them (replace() re-validates).
            params = dataclasses.replace(cfg.params(), max_new_tokens=int(max_new_tokens),
                                         temperature=float(temperature))
            message = Message("user", text, image=image, audio=audio)
            if audio and assistant.audio_route == "embed":
                yield chat, history, EMBED_HEARD, gr.skip(), *keep
            for event in assistant.stream([*history, message], params):
                if event.kind == "transcript":
                    heard = event.text
                    chat = [*chat[:-2], _user_bubble(text, image, audio, heard), chat[-1]]
                    yield chat, history, heard, gr.skip(), *keep
                elif event.kind == "description":  # describe_first: what the model saw, while it answers
                    yield chat, history, gr.skip(), f"seen: {event.text}", *keep
                elif event.kind == "token":
                    answer += event.text
                    chat = [*chat[:-1], {"role": "assistant", "content": answer.strip()}]
                    yield chat, history, gr.skip(), gr.skip(), *keep
                elif event.kind == "done" and event.reply is not None:
                    reply = event.reply
        except MmphiError as err:  # bad input (InputError, AudioError) or an unusable model/ASR: tell the user
            gr.Warning(str(err))
            chat = [*chat[:-1], {"role": "assistant", "content": f"Error: {err}"}]
            yield chat, history, gr.skip(), "error", *keep
            return
        assert reply is not None  # the engine always ends with a "done" event
        chat = [*chat[:-1], {"role": "assistant", "content": reply.text}]
        # The history keeps what was heard as text, so earlier audio is not transcribed again next turn
        # (the embedding route hears no words: its earlier clips stay out of the next prompt).
        said = "\n".join(t for t in (text, heard) if t) or ("(a spoken question)" if audio else "")
        history = [*history, Message("user", said, image=image), Message("assistant", reply.text)]
        yield chat, history, gr.skip(), _status(reply), "", None, None

    return respond


# ---------------------------------------------------------------------------- the page
def _short(source: str) -> str:
    """The last two parts of the model path (``finetune/final`` says more than ``final``)."""
    return "/".join(Path(source).parts[-2:])


def build_app(assistant: Assistant, cfg: AppConfig) -> gr.Blocks:
    """The Blocks of the app (not launched: see :func:`launch`)."""
    respond = make_responder(assistant, cfg)
    max_tokens = max(1, min(MAX_SLIDER_TOKENS, assistant.context - 1))
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}\nAsk about an image, by typing or speaking. Model: `{_short(assistant.source)}`"
                    + ("" if assistant.multimodal else " (text only)"))
        history = gr.State([])
        chat = gr.Chatbot(label="Conversation", elem_id="chat", height=420, buttons=["copy"])
        with gr.Row():
            image = gr.Image(label="Image", type="filepath", format="png", sources=["upload", "clipboard"],
                             elem_id="image", height=220, visible=assistant.multimodal)
            audio = gr.Audio(label="Spoken question (file or microphone)", type="filepath",
                             sources=["upload", "microphone"], elem_id="audio")
        text = gr.Textbox(label="Question", placeholder="What colour is the circle?", elem_id="question", lines=1)
        with gr.Row():
            send = gr.Button("Send", variant="primary", elem_id="send")
            clear = gr.Button("Clear", elem_id="clear")
        with gr.Row():
            heard = gr.Textbox(label="Heard (from the audio)", interactive=False, elem_id="heard")
            status = gr.Markdown(elem_id="status")
        with gr.Accordion("Settings", open=False):
            max_new = gr.Slider(1, max_tokens, value=min(cfg.max_new_tokens, max_tokens), step=1,
                                label="Max new tokens")
            temperature = gr.Slider(0.0, 1.5, value=cfg.temperature, step=0.05, label="Temperature (0 = greedy)")
        if cfg.examples and assistant.multimodal:
            examples_dir = Path(tempfile.mkdtemp(prefix="mmphi-app-examples-"))  # a few KB, for the app's lifetime
            gr.Examples(image_examples(cfg.examples, examples_dir), inputs=[text, image], label="Examples")
        else:
            gr.Examples([[q] for q in text_examples()], inputs=[text], label="Example questions")

        inputs = [text, image, audio, max_new, temperature, chat, history]
        outputs = [chat, history, heard, status, text, image, audio]
        # One concurrency group for both triggers: at most max_batch answers at once, all in the engine's batch.
        send.click(respond, inputs, outputs, concurrency_limit=cfg.max_batch, concurrency_id="answer")
        text.submit(respond, inputs, outputs, concurrency_limit=cfg.max_batch, concurrency_id="answer")
        clear.click(lambda: ([], [], "", "", "", None, None), None, outputs, queue=False)
        # The chatbot's own trash icon empties the display: forget the conversation too.
        chat.clear(lambda: ([], "", ""), None, [history, heard, status], queue=False)
    return demo


def launch(demo: gr.Blocks, cfg: AppConfig, block: bool = True) -> gr.Blocks:
    """Launch with the safe settings: bounded queue, ``max_batch`` answers at once, upload limit, no extra paths.

    ``block=False`` returns once the server is up (tests, scripts); ``demo.close()`` stops it.
    """
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.max_batch)
    demo.launch(server_name=cfg.host, server_port=cfg.port, share=cfg.share, prevent_thread_lock=not block,
                max_file_size=int(cfg.max_upload_mb * 2**20), show_error=False, quiet=not block,
                ssr_mode=False)
    return demo


def error_app(message: str) -> gr.Blocks:
    """A page that explains why the app cannot run (e.g. no model), instead of a traceback."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}\n\n**The app cannot start:** {message}")
    return demo


def run_app(cfg: AppConfig) -> None:
    """``mmphi app``: load the model and serve the app until interrupted."""
    logging.basicConfig(level=logging.INFO)
    assistant = Assistant.load(cfg.model, asr_model=cfg.asr_model or None, describe_first=cfg.describe_first,
                               asr_prompt=cfg.asr_prompt or None, audio_route=cfg.audio_route,
                               max_batch=cfg.max_batch)
    launch(build_app(assistant, cfg), cfg)
