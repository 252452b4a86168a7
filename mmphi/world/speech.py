"""Spoken questions and captions with espeak-ng (a Debian package), for the audio paths.

Test questions (``--speech``) are what ``mmphi eval`` asks aloud; train questions and captions
(``--speech-train``, ``--speech-captions``) and val questions (``--speech-val``) are what the
audio projector learns from (``mmphi speech-align`` / ``speech-finetune``). Each split's clips are
spoken from that split's own records, so the splits stay as disjoint as their scenes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmphi.chat import IMAGE
from mmphi.errors import MmphiError

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3")
# Train clips take more voices (espeak-ng variants) and a wider range of rates than the test ones,
# so that the audio projector does not learn five voices by heart.
TRAIN_VOICES = (*VOICES, "en-us+f2", "en-us+m1", "en-gb+f4", "en-gb+m2", "en-us+klatt", "en-gb-scotland",
                "en-029")
TRAIN_SPEEDS = (120, 200)


class SpeechUnavailable(MmphiError):
    """espeak-ng is not installed."""


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SpeechUnavailable(
            "espeak-ng is not installed, so spoken questions cannot be generated. Install it with "
            "'apt-get install espeak-ng' (the README's set-up command does this), or run without --speech.")
    return path


def speak(text: str, out: Path, voice: str = "en-us", speed: int = 160) -> None:
    """Write ``text`` spoken by espeak-ng to the WAV file ``out``."""
    proc = subprocess.run([espeak_path(), "-v", voice, "-s", str(speed), "-w", str(out), text],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"espeak-ng failed for {text!r}: {proc.stderr.strip()}")


def speak_many(jobs: list[tuple[str, Path, str, int]], workers: int = 2) -> None:
    """Synthesize (text, path, voice, speed) jobs in parallel (espeak-ng is single-threaded)."""
    espeak_path()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda j: speak(*j), jobs))


def _asked(rec: dict, turn: int) -> tuple[str, str]:
    return (rec["conversations"][2 * turn]["value"].replace(IMAGE, "").strip(),
            rec["conversations"][2 * turn + 1]["value"])


def spoken_questions(records: list[dict], n: int, rng: np.random.Generator, varied: bool,
                     prefix: str = "") -> list[dict]:
    """Up to ``n`` records' exact-answer questions to speak, one per record.

    Not ``varied`` (the test split): the first exact-answer turn, five voices and four rates in turn,
    as the world has always spoken its test questions. ``varied`` (train, val): a random
    exact-answer turn, a random voice of ``TRAIN_VOICES`` and a random rate in ``TRAIN_SPEEDS``.
    """
    usable = [r for r in records if any(kind != "describe" for kind in r["types"])]
    picks = sorted(int(p) for p in rng.permutation(len(usable))[:n])
    items = []
    for k, idx in enumerate(picks):
        rec = usable[idx]
        turns = [t for t, kind in enumerate(rec["types"]) if kind != "describe"]
        if varied:
            turn = turns[int(rng.integers(len(turns)))]
            voice = TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))]
            speed = int(rng.integers(TRAIN_SPEEDS[0], TRAIN_SPEEDS[1] + 1))
        else:
            turn, voice, speed = turns[0], VOICES[k % len(VOICES)], 140 + 10 * (k % 4)
        q, a = _asked(rec, turn)
        items.append({"audio": f"speech/{prefix}{k:04d}.wav", "record": rec["id"], "image": rec["image"],
                      "type": rec["types"][turn], "question": q, "answer": a, "voice": voice, "speed": speed,
                      **({"turn": turn} if varied else {})})
    return items


def spoken_captions(coco: dict, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` captions (of different images where there are enough) to speak, voices and rates varied."""
    anns = coco["annotations"]
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    items = []
    for k, idx in enumerate(sorted(int(p) for p in rng.permutation(len(anns))[:n])):
        ann = anns[idx]
        items.append({"audio": f"speech/caption-{k:04d}.wav", "kind": "caption", "image": names[ann["image_id"]],
                      "caption": ann["caption"], "voice": TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))],
                      "speed": int(rng.integers(TRAIN_SPEEDS[0], TRAIN_SPEEDS[1] + 1))})
    return items


def said(item: dict) -> str:
    """The words a clip of ``speech.json`` says."""
    return item["caption"] if item.get("kind") == "caption" else item["question"]


def write_speech(split_dir: Path, items: list[dict]) -> int:
    """Speak ``items`` into ``split_dir/speech/`` and list them in ``split_dir/speech.json``."""
    (split_dir / "speech").mkdir(exist_ok=True)
    speak_many([(said(it), split_dir / it["audio"], it["voice"], it["speed"]) for it in items])
    (split_dir / "speech.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
    return len(items)
