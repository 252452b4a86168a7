"""The conversation template (LLaVA's "phi" style) shared by data, corpus and inference.

    {system} USER: <image>\\n{question} ASSISTANT: {answer}<|endoftext|>USER: {question} ASSISTANT: ...

Phi-2 has no BOS token; ``<|endoftext|>`` ends every assistant answer (and is the loss target
that teaches the model to stop). Only the answers and their EOS carry loss.
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE = "<image>"
AUDIO = "<audio>"  # where spoken-as-embeddings audio stands (the speech stages, --audio-route embed)
EOS = "<|endoftext|>"
USER = "USER:"
ASSISTANT = "ASSISTANT:"
# What stage 1 asks of an image (and the stage-0 corpus of its description, so the LM knows the words).
CAPTION_PROMPTS = ("Describe the image briefly.", "Write a short caption for this image.",
                   "What is in this picture? Answer in one sentence.", "Caption this image.")
# The first turn of answering "after describing": one of the shapes world's own describe questions.
DESCRIBE = "Describe the image."
LLAVA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def user_prefix(system: str, first: bool) -> str:
    """Text that opens a user turn: the system line before the first one, nothing after EOS."""
    if first and system:
        return f"{system} {USER} "
    return f"{USER} "


def format_conversation(rounds: Sequence[tuple[str, str | None]], system: str = "") -> str:
    """Render (user, answer) rounds as one string; an answer of ``None`` leaves the prompt open.

    The string is what stage-0 corpus documents look like (with the scene description where an
    image would stand) and what the multimodal data builder produces segment by segment.
    """
    parts: list[str] = []
    for i, (user, answer) in enumerate(rounds):
        parts.append(f"{user_prefix(system, i == 0)}{user} {ASSISTANT}")
        if answer is None:
            break
        parts.append(f" {answer}{EOS}")
    return "".join(parts)


def with_image(question: str, at_end: bool = False) -> str:
    """The first user turn with the image placeholder at its start or its end (both occur in LLaVA)."""
    return f"{question}\n{IMAGE}" if at_end else f"{IMAGE}\n{question}"
