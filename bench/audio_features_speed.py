"""What a spoken question costs on the embedding route: encoding its speech alone vs a whole 30 s window.

    .venv/bin/python bench/audio_features_speed.py --clips runs/world/test [--n 50] [--stack 5]

For the first ``--n`` clips of a split's ``speech.json``, interleaved in one process after a warm-up:
decoding (PyAV), the VAD span, and the Whisper encoder (CTranslate2) on the span's own mel frames
against the same speech padded to the 30 s window Whisper was trained on; the median of each and the
ratio are printed, with the tokens per clip at ``--stack`` frames per token, and how close the short
input's encoder states are to the window's over the speech (cosine similarity per frame).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from mmphi.audio import load_audio
from mmphi.audio.features import HOP, AudioEncoder


def _ms(f, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = f(*args)
    return 1000 * (time.perf_counter() - start), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", required=True, help="a split folder with speech.json (e.g. runs/world/test)")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--stack", type=int, default=5)
    args = ap.parse_args()
    split = Path(args.clips)
    items = json.loads((split / "speech.json").read_text())[: args.n]
    enc = AudioEncoder(stack=args.stack)
    enc.encode(split / items[0]["audio"])  # warm-up: VAD model, CTranslate2 caches
    rows: dict[str, list[float]] = {"decode": [], "vad span": [], "encode speech only": [], "encode 30 s window": []}
    tokens, seconds, cosines = [], [], []
    for it in items:
        t, samples = _ms(load_audio, split / it["audio"])
        rows["decode"].append(t)
        t, speech = _ms(enc.speech, samples)
        rows["vad span"].append(t)
        t, short = _ms(enc._encode_window, speech)
        rows["encode speech only"].append(t)
        mel = np.ascontiguousarray(enc.model.feature_extractor(np.pad(speech, (0, 30 * 16000 - speech.size))))
        t, full = _ms(lambda m: np.asarray(enc.model.encode(m[:, :3000]))[0], mel)
        rows["encode 30 s window"].append(t)
        n = min(short.shape[0], speech.size // (2 * HOP))
        a, b = short[:n], full[:n]
        cosines.append(float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))))
        tokens.append(short.shape[0] // args.stack)
        seconds.append(speech.size / 16000)
    print(f"{len(items)} clips of {split}, speech {statistics.mean(seconds):.2f} s on average (VAD span), "
          f"{statistics.mean(tokens):.1f} tokens per clip at {50 / args.stack:g} tokens/s")
    print("| step | median ms per clip |\n|---|--:|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    ratio = statistics.median(rows["encode 30 s window"]) / statistics.median(rows["encode speech only"])
    print(f"\nencoder: speech only {ratio:.1f}x faster than the 30 s window; cosine similarity of their states "
          f"over the speech {statistics.mean(cosines):.3f}")


if __name__ == "__main__":
    main()
