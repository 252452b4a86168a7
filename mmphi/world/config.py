"""Settings of ``mmphi world`` (the recipe's ``world:`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmphi.config import check, opt


@dataclass
class WorldConfig:
    out: str = opt("runs/world", "output folder (train/ val/ test/ splits and world.json)")
    seed: int = opt(0, "random seed; the same seed gives byte-identical files")
    scenes: int = opt(2000, "image scenes over all splits")
    train_scenes: int = opt(0, "train image scenes (0 = what --scenes leaves after val and test); more train "
                               "scenes leave the val and test splits unchanged")
    val_frac: float = opt(0.1, "fraction of scenes in the val split")
    test_frac: float = opt(0.1, "fraction of scenes in the test split")
    corpus_scenes: int = opt(20000, "extra text-only scenes described in the train corpus")
    workers: int = opt(0, "processes drawing the images (0 = one per CPU core); the files are the same for any number")
    speech: int = opt(0, "number of test questions spoken with espeak-ng into test/speech/")
    speech_train: int = opt(0, "train questions spoken into train/speech/ (voices and rates varied), for the "
                               "audio projector (docs/speech.md, 'Speech as embeddings')")
    speech_captions: int = opt(0, "train captions spoken into train/speech/ (stage 1 of the audio projector)")
    speech_val: int = opt(0, "val questions spoken into val/speech/ (the audio stages' validation)")
    image_size: int = opt(96, "image side in pixels (a 3x3 grid of slots)")
    max_objects: int = opt(3, "objects per scene: 1..max_objects (at most 5 slots)")
    max_turns: int = opt(4, "question rounds per train conversation: 1..max_turns")
    describe_first: float = opt(
        0.0, "chance that a train conversation opens by describing the image, then asks its questions (the way "
             "a describe-first assistant answers); val and test conversations are unchanged")
    colour_position: float = opt(
        0.0, "chance that a train conversation of a scene with several objects gets one more round: where an "
             "object is, named by its colour alone (\"Where is the red shape?\"), the binding the tiny base learns "
             "last; val and test conversations are unchanged")
    corpus_rounds: list[int] = opt([2, 5], "question rounds per corpus document: min,max")
    corpus_describe: float = opt(
        1.0, "chance that a corpus document may ask to describe the scene (answers that copy the description)")
    corpus_captions: float = opt(
        0.0, "chance that a corpus document ends with a caption round (a stage-1 caption prompt answered with one "
             "of the scene's captions), so the LM knows every word that stage 1's captions use")
    corpus_descriptions: Literal["canonical", "paraphrased"] = opt(
        "paraphrased", "how corpus documents describe the scene: the canonical description, or any full caption")

    def __post_init__(self) -> None:
        check(self.scenes >= 3, f"scenes must be >= 3 (one per split), got {self.scenes}")
        check(0 < self.val_frac < 1 and 0 < self.test_frac < 1 and self.val_frac + self.test_frac < 1,
              "val_frac and test_frac must be in (0, 1) and sum to less than 1")
        check(self.train_scenes >= 0, f"train_scenes must be >= 0, got {self.train_scenes}")
        check(self.corpus_scenes >= 0, f"corpus_scenes must be >= 0, got {self.corpus_scenes}")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        check(min(self.speech, self.speech_train, self.speech_captions, self.speech_val) >= 0,
              "speech, speech_train, speech_captions and speech_val must be >= 0")
        check(self.image_size >= 24 and self.image_size % 3 == 0,
              f"image_size must be a multiple of 3 and >= 24, got {self.image_size}")
        check(1 <= self.max_objects <= 5, f"max_objects must be in 1..5, got {self.max_objects}")
        check(1 <= self.max_turns <= 6, f"max_turns must be in 1..6, got {self.max_turns}")
        check(len(self.corpus_rounds) == 2 and 1 <= self.corpus_rounds[0] <= self.corpus_rounds[1] <= 12,
              f"corpus_rounds must be min,max with 1 <= min <= max <= 12, got {self.corpus_rounds}")
        check(0 <= self.corpus_captions <= 1, f"corpus_captions must be in [0, 1], got {self.corpus_captions}")
        check(0 <= self.describe_first <= 1, f"describe_first must be in [0, 1], got {self.describe_first}")
        check(0 <= self.colour_position <= 1, f"colour_position must be in [0, 1], got {self.colour_position}")
        check(0 <= self.corpus_describe <= 1, f"corpus_describe must be in [0, 1], got {self.corpus_describe}")
