"""Settings of ``mmphi embed-audio`` (light module: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from mmphi.config import check, opt

ENCODER_HELP = ("CTranslate2 Whisper model whose encoder makes the features: a folder, a faster-whisper size name "
                "(small, large-v3, ...) or a hub id; empty = the bundled Whisper tiny.en")


@dataclass
class AudioEmbedConfig:
    data: str = opt("runs/world", "a shapes world folder (every split's speech.json) or one split folder",
                    required=True)
    out: str = opt("runs/audio-features", "audio feature store folder; rerunning resumes, new clips are appended")
    encoder: str = opt("", ENCODER_HELP)
    stack: int = opt(5, "encoder frames (50 a second) concatenated into one feature vector: 5 = 10 tokens a second")
    shard_size: int = opt(1000, "clips per shard file (the unit of resume)")
    max_seconds: float = opt(600.0, "longest clip accepted; longer ones are skipped with the reason")

    def __post_init__(self) -> None:
        check(bool(self.data), "data is required (--data)")
        check(self.stack >= 1, f"stack must be >= 1, got {self.stack}")
        check(self.shard_size >= 1, f"shard_size must be >= 1, got {self.shard_size}")
        check(self.max_seconds > 0, "max_seconds must be > 0")
