"""Settings of ``mmphi speech-align`` and ``mmphi speech-finetune``: the audio projector's two stages."""

from __future__ import annotations

from dataclasses import dataclass

from mmphi.config import TrainArgs, check, opt
from mmphi.mm.config import KINDS, ProjectorKind


@dataclass
class SpeechStageArgs(TrainArgs):
    init: str = opt("", "the multimodal model to give speech to (e.g. runs/demo/finetune/final); speech-finetune "
                        "takes speech-align's final/", required=True)
    data: str = opt("", "a shapes world with spoken clips (`mmphi world --speech-train N --speech-captions N "
                        "--speech-val N`)", required=True)
    audio_features: str = opt("", "audio feature store of the world's clips (from `mmphi embed-audio`)", required=True)
    features: str = opt("", "feature store of the world's images (from `mmphi embed`): speech-finetune's "
                            "conversations, and both stages' closing spoken val VQA")
    max_len: int = opt(256, "longest sequence in tokens (image and audio placeholders included)")
    val_limit: int = opt(300, "spoken val questions answered greedily at the end, through the embeddings and typed "
                              "(0 = skip)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.init), "init is required (--init)")
        check(bool(self.data), "data is required (--data)")
        check(bool(self.audio_features), "audio_features is required (--audio-features)")
        check(self.max_len >= 16, f"max_len must be >= 16, got {self.max_len}")
        check(self.val_limit >= 0, "val_limit must be >= 0")


@dataclass
class SpeechAlignConfig(SpeechStageArgs):
    projector: ProjectorKind = opt("mlp2x_gelu", "audio projector kind: " + ", ".join(KINDS))
    projector_hidden: int = opt(0, "hidden width of the audio projector (0 = the LM's width)")
    encoder: str = opt("", "the speech encoder the audio features came from, recorded for inference; empty = the "
                           "bundled Whisper tiny.en (must match the store's)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.projector_hidden >= 0, "projector_hidden must be >= 0")


@dataclass
class SpeechFinetuneConfig(SpeechStageArgs):
    features: str = opt("", "feature store of the world's images (from `mmphi embed`): the spoken and typed "
                            "conversations' images, and the closing spoken val VQA", required=True)
    typed_per_spoken: float = opt(2.0, "typed conversations of the world's train split mixed in per spoken one, so "
                                       "the adapter keeps answering typed (and transcribed) questions")
    projector_lr: float = opt(0.0, "learning rate of the audio projector; 0 = same as lr")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.features), "features is required (--features)")
        check(self.typed_per_spoken >= 0, "typed_per_spoken must be >= 0")
        check(self.projector_lr >= 0, "projector_lr must be >= 0")
