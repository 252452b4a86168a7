"""How fast the audio path turns speech into text: model load, then clips of about 3, 15 and 60 s.

    .venv/bin/python bench/asr_speed.py [--model PATH_OR_NAME] [--beam-size 5] [--no-vad] [--repeats 3]

Clips are espeak-ng sentences separated by 0.6 s pauses, like continuous speech (the VAD, which
splits at 2 s of silence, keeps such a clip whole). Each clip is transcribed ``--repeats`` times
after one warm-up call (which loads the Silero VAD and warms CTranslate2's caches), and the
median wall time is reported. Real-time factor = wall time / audio length (0.05 = 20x faster
than real time). Each clip is also run with the VAD switched the other way, interleaved in the
same process, and the ratio of the two wall times is printed (ratios survive a busy machine
better than absolute times).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmphi.audio import SAMPLE_RATE, Transcriber, load_audio
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
TARGETS_S = (3.0, 15.0, 60.0)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model name or directory (default: bundled tiny.en)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--no-vad", action="store_true", help="let Whisper see the pauses too")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        sentences = spoken_sentences(Path(tmp))
    clips = [build_clip(sentences, t) for t in TARGETS_S]

    transcriber = Transcriber(model=args.model, beam_size=args.beam_size, vad=not args.no_vad)
    start = time.perf_counter()
    transcriber.transcribe(sentences[0])
    warmup_s = time.perf_counter() - start

    print(f"model: {transcriber.model_name} on {transcriber.device}/{transcriber.compute_type}, "
          f"beam {args.beam_size}, VAD {'off' if args.no_vad else 'on'}")
    first_s = sentences[0].size / SAMPLE_RATE
    print(f"model load: {transcriber.load_s:.2f} s; first call (warm-up, {first_s:.1f} s clip): {warmup_s:.2f} s")
    print()
    other = "off" if transcriber.vad else "on"
    print(f"| clip length (s) | wall time (s) | real-time factor | words | words/s "
          f"| wall time, VAD {other} (s) | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for clip in clips:
        runs, alt = [], []
        for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
            runs.append(transcriber.transcribe(clip))
            transcriber.vad = not transcriber.vad
            alt.append(transcriber.transcribe(clip))
            transcriber.vad = not transcriber.vad
        wall = statistics.median(r.elapsed_s for r in runs)
        alt_wall = statistics.median(r.elapsed_s for r in alt)
        words = len(runs[0].text.split())
        duration = clip.size / SAMPLE_RATE
        print(f"| {duration:.1f} | {wall:.3f} | {wall / duration:.3f} | {words} | {words / wall:.0f} "
              f"| {alt_wall:.3f} | {alt_wall / wall:.2f} |")
    print()
    print(f"last clip's transcript: {runs[0].text}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
