"""``mmphi chat``: one-shot or interactive chat in the terminal, answers streamed as they come."""

from __future__ import annotations

from mmphi.infer.assistant import Assistant
from mmphi.infer.config import ChatConfig
from mmphi.infer.inputs import InputError, Message

HELP = ("commands: /image PATH (attach an image to your next message), /audio PATH (attach audio), "
        "/reset (new conversation), /quit")


def _answer(assistant: Assistant, history: list[Message], cfg: ChatConfig) -> str:
    reply_text = ""
    for event in assistant.stream(history, cfg.params(cfg.seed)):
        if event.kind == "transcript":
            print(f"(heard: {event.text})", flush=True)
        elif event.kind == "description":
            print(f"(seen: {event.text})", flush=True)
        elif event.kind == "token":
            print(event.text, end="", flush=True)
        elif event.kind == "done":
            assert event.reply is not None, "a done event carries the reply"
            reply_text = event.reply.text
            for w in event.reply.warnings:
                print(f"\n(note: {w})", end="")
    print(flush=True)
    return reply_text


def _interactive(assistant: Assistant, cfg: ChatConfig) -> None:
    print(f"chatting with {cfg.model}; {HELP}")
    history: list[Message] = []
    image, audio = cfg.image or None, cfg.audio or None
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            history, image, audio = [], None, None
            continue
        if line.startswith(("/image ", "/audio ")):
            kind, path = line.split(" ", 1)
            image, audio = (path.strip(), audio) if kind == "/image" else (image, path.strip())
            print(f"({kind[1:]} attached to your next message)")
            continue
        if line.startswith("/"):
            print(HELP)
            continue
        msg = Message("user", line, image=image, audio=audio)
        image = audio = None
        try:
            print("assistant> ", end="", flush=True)
            answer = _answer(assistant, [*history, msg], cfg)
        except InputError as err:
            print(f"\nerror: {err}")
            continue
        history += [msg, Message("assistant", answer)]


def chat(cfg: ChatConfig) -> None:
    assistant = Assistant.load(cfg.model, asr_model=cfg.asr_model or None, describe_first=cfg.describe_first,
                               asr_prompt=cfg.asr_prompt or None, audio_route=cfg.audio_route)
    if not cfg.text and not cfg.audio:  # no question given: interactive (an --image goes with the first one)
        _interactive(assistant, cfg)
        return
    _answer(assistant, [Message("user", cfg.text, image=cfg.image or None, audio=cfg.audio or None)], cfg)
