"""How fast the audio path turns speech into text: each path against faster-whisper's plain one, side by side.

    .venv/bin/python bench/asr_speed.py [--model PATH_OR_NAME] [--no-vad] [--repeats 3]
    .venv/bin/python bench/asr_speed.py --questions runs/demo/world/test   # + WER on spoken questions

Clips of about 3, 15, 60 and 120 s are espeak-ng sentences separated by 0.6 s pauses, like
continuous speech. Each is transcribed ``--repeats`` times after one warm-up call (which loads
the Silero VAD and warms CTranslate2's caches) by the path mmphi picks for its length (``short``
up to one 30 s window, ``batched`` beyond) and, interleaved in the same process, by faster-whisper's
sequential ``plain`` path; the median wall times and their ratio are printed (ratios survive a
busy machine better than absolute times). Real-time factor = wall time / audio length (0.05 =
20x faster than real time). ``--questions SPLIT`` also transcribes a world split's spoken
questions (``speech.json``) by each path and beam size and prints WER and real-time factor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmphi.audio import SAMPLE_RATE, Transcriber, load_audio
from mmphi.audio.asr import WINDOW_S
from mmphi.config import load_recipe
from mmphi.eval.metrics import word_error_rate
from mmphi.world.speech import speak

SENTENCES = [
    "The red circle is to the left of the blue square.",
    "How many shapes are there in the picture?",
    "Is there a green triangle at the bottom of the image?",
    "What colour is the large diamond on the right?",
    "Please describe the scene in a few words.",
    "The yellow square sits in the centre, next to a small purple circle.",
    "Tomorrow morning we will walk along the river and count the boats.",
    "Finally, the orange star is hiding behind the tall green tree.",
]
TARGETS_S = (3.0, 15.0, 60.0, 120.0)
PAUSE_S = 0.6


def spoken_sentences(folder: Path) -> list[np.ndarray]:
    """Each sentence spoken once by espeak-ng, at 16 kHz."""
    clips = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"s{i}.wav"
        speak(text, path, voice="en-us", speed=140)
        clips.append(load_audio(path))
    return clips


def build_clip(sentences: list[np.ndarray], target_s: float) -> np.ndarray:
    """Sentences in turn, with pauses, until the clip is at least ``target_s`` long (whole sentences only)."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    n = 0
    while n < target_s * SAMPLE_RATE - 0.5 * SAMPLE_RATE or not parts:
        parts += [sentences[len(parts) // 2 % len(sentences)], pause]
        n += parts[-2].size + pause.size
    return np.concatenate(parts[:-1])


def median_run(transcriber: Transcriber, clip: np.ndarray, repeats: int, path: str, alt: str):
    """Median wall time by ``path`` and by ``alt``, interleaved, and both last transcripts."""
    runs, alts = [], []
    for _ in range(repeats):  # interleaved, so load from other processes hits both alike
        runs.append(transcriber.transcribe(clip, path=path))
        alts.append(transcriber.transcribe(clip, path=alt))
    return (statistics.median(r.elapsed_s for r in runs), statistics.median(r.elapsed_s for r in alts),
            runs[-1].text, alts[-1].text)


def questions_table(transcriber: Transcriber, split: Path) -> None:
    """WER and real-time factor on a world split's spoken questions, by path and beam size."""
    items = json.loads((split / "speech.json").read_text())
    clips = [load_audio(split / it["audio"]) for it in items]
    said = [it["question"] for it in items]
    audio_s = sum(c.size for c in clips) / SAMPLE_RATE
    print(f"\n{len(clips)} spoken questions from {split} ({audio_s / len(clips):.1f} s each on average), "
          f"prompt: {'yes' if transcriber.prompt else 'no'}\n")
    print("| path | beam | WER | real-time factor | speed vs plain, beam 5 |")
    print("|---|--:|--:|--:|--:|")
    results = {}
    for path, beam in (("plain", 5), ("short", 5), ("short", 1), ("plain", 1)):
        heard = [transcriber.transcribe(c, beam_size=beam, path=path) for c in clips]
        busy = sum(h.elapsed_s for h in heard)
        results[(path, beam)] = busy
        print(f"| {path} | {beam} | {word_error_rate(said, [h.text for h in heard]):.4f} | {busy / audio_s:.3f} "
              f"| {results[('plain', 5)] / busy:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model name or directory (default: bundled tiny.en)")
    parser.add_argument("--no-vad", action="store_true", help="let Whisper see the pauses too")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", type=Path, default=None,
                        help="a world split with speech.json: also WER by path and beam on its spoken questions")
    parser.add_argument("--no-prompt", action="store_true", help="without the tiny recipe's shapes-word prompt")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sentences = spoken_sentences(Path(tmp))
    clips = [build_clip(sentences, t) for t in TARGETS_S]

    prompt = None if args.no_prompt else load_recipe("tiny")["eval"]["asr_prompt"]
    transcriber = Transcriber(model=args.model, vad=not args.no_vad, prompt=prompt)
    start = time.perf_counter()
    transcriber.transcribe(sentences[0])
    transcriber.transcribe(clips[-1])
    warmup_s = time.perf_counter() - start

    print(f"model: {transcriber.model_name} on {transcriber.device}/{transcriber.compute_type}, beam "
          f"{transcriber.short_beam_size} up to {WINDOW_S:g} s and {transcriber.beam_size} beyond, batch "
          f"{transcriber.batch_size}, VAD {'off' if args.no_vad else 'on'}")
    print(f"model load: {transcriber.load_s:.2f} s; warm-up calls: {warmup_s:.2f} s")
    print()
    print("| clip length (s) | path | wall time (s) | real-time factor | words | plain path (s) | speed-up "
          "| same words |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for clip in clips:
        duration = clip.size / SAMPLE_RATE
        path = transcriber.path_for(duration)
        wall, plain, text, plain_text = median_run(transcriber, clip, args.repeats, path, "plain")
        same = "yes" if text.split() == plain_text.split() else "no"
        print(f"| {duration:.1f} | {path} | {wall:.3f} | {wall / duration:.3f} | {len(text.split())} | {plain:.3f} "
              f"| {plain / wall:.2f}x | {same} |")
    print()
    print(f"last clip's transcript: {text}")
    if args.questions:
        questions_table(transcriber, args.questions)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
