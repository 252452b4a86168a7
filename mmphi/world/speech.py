"""Spoken questions with espeak-ng (a Debian package), for the audio path's tests and evaluation."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mmphi.errors import MmphiError

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3")


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


def speak_many(jobs: list[tuple[str, Path, str, int]], workers: int = 4) -> None:
    """Synthesize (text, path, voice, speed) jobs in parallel (espeak-ng is single-threaded)."""
    espeak_path()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda j: speak(*j), jobs))
