"""``mmphi world``: write the shapes world in the real formats.

    W/world.json                     settings, counts and the world's vocabulary
    W/{train,val,test}/images/*.png  the scenes
    W/{split}/scenes.json            ground truth (objects with shape, colour, size, slot)
    W/{split}/captions.json          COCO 2017 captions format, five paraphrases per image
    W/{split}/instruct.json          LLaVA-Instruct-150K format, plus "types" (one per answer)
    W/{split}/corpus.txt             stage-0 text: documents separated by blank lines
    W/test/speech/*.wav, speech.json spoken test questions (with --speech N)
    W/{train,val}/speech/, speech.json  spoken train questions and captions, val questions (--speech-train,
                                     --speech-captions, --speech-val: the audio projector's data)

Splits hold disjoint scenes: no scene of val or test (objects with their shape, colour, size
and slot) occurs in train or in the train corpus. Every file is a pure function of the seed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmphi.chat import CAPTION_PROMPTS, EOS, format_conversation, with_image
from mmphi.common.cores import usable_cores
from mmphi.common.questions import QUESTION_TYPES
from mmphi.world import language, scenes
from mmphi.world.config import WorldConfig
from mmphi.world.speech import espeak_path, spoken_captions, spoken_questions, write_speech

SPLITS = ("train", "val", "test")
STREAMS = {"train": 2, "val": 1, "test": 0}  # one random stream per split
CORPUS_STREAM = 7
RENDER_CHUNK = 500  # scenes per rendering job


def _render_chunk(job: tuple[list[scenes.Scene], list[str], str, int]) -> int:
    items, names, folder, size = job
    for scene, name in zip(items, names, strict=True):
        scenes.render(scene, size).save(Path(folder) / name, optimize=False)
    return len(items)


def _render_all(items: list[scenes.Scene], names: list[str], folder: Path, size: int, workers: int,
                desc: str) -> Iterator[None]:
    """Draw and save every scene, in ``workers`` processes when there is more than one chunk.

    A generator: the caller's work between ``next`` calls (the split's text) overlaps the drawing;
    exhausting it waits for the last image. Each image is a pure function of its scene, so the
    files are the same for any number of workers.
    """
    jobs = [(items[i:i + RENDER_CHUNK], names[i:i + RENDER_CHUNK], str(folder), size)
            for i in range(0, len(items), RENDER_CHUNK)]
    workers = min(workers or usable_cores(), len(jobs))
    with tqdm(total=len(items), desc=desc, unit="image", mininterval=0.5) as bar:
        if workers <= 1:
            yield
            for job in jobs:
                bar.update(_render_chunk(job))
            return
        # spawn, not fork: the demo's process may already hold torch's threads
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            done = pool.imap_unordered(_render_chunk, jobs)
            yield
            for n in done:
                bar.update(n)


def split_of(signature: tuple, val_frac: float, test_frac: float) -> str:
    """The one split a scene signature belongs to, from a stable hash of the signature.

    Splits are disjoint by construction and share one distribution: each split holds its share
    of every kind of scene (drawing the held-out splits first and excluding their scenes from
    train instead would leave train without the few distinct one-object scenes).
    """
    u = int.from_bytes(hashlib.sha256(repr(signature).encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_frac else "val" if u < test_frac + val_frac else "train"


def _draw(cfg: WorldConfig, stream: int, n: int, split: str, desc: str) -> list[scenes.Scene]:
    out = []
    for i in tqdm(range(n), desc=desc, unit="scene", leave=False, mininterval=0.5):
        rng = np.random.default_rng([cfg.seed, stream, i])
        for _ in range(1000):
            s = scenes.sample_scene(rng, cfg.max_objects)
            if split_of(s.signature(), cfg.val_frac, cfg.test_frac) == split:
                break
        else:  # pragma: no cover - only with absurd settings
            raise RuntimeError(f"could not draw a {split} scene; check val_frac / test_frac")
        out.append(s)
    return out


def _split_sizes(cfg: WorldConfig) -> dict[str, int]:
    n_val = max(1, round(cfg.scenes * cfg.val_frac))
    n_test = max(1, round(cfg.scenes * cfg.test_frac))
    return {"train": cfg.train_scenes or cfg.scenes - n_val - n_test, "val": n_val, "test": n_test}


def _corpus_doc(scene: scenes.Scene, rng: np.random.Generator, caps: list[str], cfg: WorldConfig) -> str:
    """A conversation in the chat template where the scene's description stands in for the image."""
    options = language.full_captions(caps)
    desc = options[int(rng.integers(len(options)))] if cfg.corpus_descriptions == "paraphrased" else caps[0]
    # Several rounds per description: answers are the learnable part of the text (the descriptions
    # themselves are random), so more rounds per document give the LM more signal per token.
    low, high = cfg.corpus_rounds
    n = int(rng.integers(low, high + 1))
    # "Describe" answers copy the description: cheap to learn, and many tokens that teach nothing more.
    describe = cfg.corpus_describe >= 1 or bool(rng.random() < cfg.corpus_describe)
    turns = language.conversation(scene, rng, n, describe=describe)
    first_q = turns[0][1]
    first = f"{first_q}\n{desc}" if rng.random() < 0.5 else f"{desc}\n{first_q}"
    rounds = [(first, turns[0][2])] + [(q, a) for _, q, a in turns[1:]]
    if cfg.corpus_captions and rng.random() < cfg.corpus_captions:  # no draw at 0: older worlds stay the same
        rounds.append((CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))], caps[int(rng.integers(len(caps)))]))
    text = format_conversation(rounds)
    return text[: -len(EOS)]  # the corpus preparer puts EOS between documents


def _describe_first(scene: scenes.Scene, turns: list, rng: np.random.Generator, chance: float) -> list:
    """With probability ``chance``, the conversation opens with a describe round and its questions follow.

    Its own random stream, so every other file of the world is the same with or without it.
    """
    if rng.random() >= chance:
        return turns
    q, a = language.question("describe", scene, rng)
    return [("describe", q, a)] + [t for t in turns if t[0] != "describe"]


def _colour_position(scene: scenes.Scene, turns: list, rng: np.random.Generator, chance: float) -> list:
    """With probability ``chance``, one more round: where an object is, named by its colour alone.

    Only in scenes of two or more objects with a colour of its own, and never a question the
    conversation already asks; its own random stream, like :func:`_describe_first`.
    """
    if rng.random() >= chance:
        return turns
    asked = {language.meaning_of(k, q) for k, q, _ in turns}
    extra = language.position_by_colour(scene, rng)
    if extra is None or language.meaning_of("position", extra[0]) in asked:
        return turns
    return [*turns, ("position", *extra)]


def _write_split(root: Path, split: str, stream: int, items: list[scenes.Scene], cfg: WorldConfig) -> None:
    d = root / split
    for stale in (d / "images", d / "speech"):  # a previous, different world in the same folder
        if stale.is_dir():
            shutil.rmtree(stale)
    (d / "speech.json").unlink(missing_ok=True)  # the listing of the clips just removed
    (d / "images").mkdir(parents=True)
    images: list[dict] = []
    annotations: list[dict] = []
    records: list[dict] = []
    truth: list[dict] = []
    corpus: list[str] = []
    names = [f"{split}-{i:06d}.png" for i in range(len(items))]  # unique across splits: one store holds them all
    drawing = _render_all(items, names, d / "images", cfg.image_size, cfg.workers, f"world {split} images")
    next(drawing)
    for i, (scene, name) in enumerate(zip(items, names, strict=True)):
        rng = np.random.default_rng([cfg.seed, stream, i, 1])
        images.append({"id": i, "file_name": name, "width": cfg.image_size, "height": cfg.image_size})
        caps = language.captions(scene, rng)
        for cap in caps:
            annotations.append({"image_id": i, "id": len(annotations), "caption": cap})
        turns = language.conversation(scene, rng, int(rng.integers(1, cfg.max_turns + 1)))
        if split == "train" and cfg.describe_first:
            turns = _describe_first(scene, turns, np.random.default_rng([cfg.seed, stream, i, 2]), cfg.describe_first)
        if split == "train" and cfg.colour_position:
            turns = _colour_position(scene, turns, np.random.default_rng([cfg.seed, stream, i, 3]), cfg.colour_position)
        first = with_image(turns[0][1], at_end=bool(rng.random() < 0.5))
        conv = [{"from": "human", "value": first}, {"from": "gpt", "value": turns[0][2]}]
        for _, q, a in turns[1:]:
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append({"id": f"{split}-{i:06d}", "image": name, "conversations": conv,
                        "types": [t for t, _, _ in turns]})
        truth.append({"id": i, "file_name": name, **scene.to_json()})
        corpus.append(_corpus_doc(scene, rng, caps, cfg))
    coco = {"info": {"description": f"shapes world {split} captions", "version": "1.0"},
            "licenses": [], "images": images, "annotations": annotations}
    for _ in drawing:  # wait for the last images
        pass
    _dump(d / "captions.json", coco)
    _dump(d / "instruct.json", records)
    _dump(d / "scenes.json", truth)
    (d / "corpus.txt").write_text("\n\n".join(corpus) + "\n")


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _extra_corpus(root: Path, cfg: WorldConfig) -> None:
    docs = []
    for i, scene in enumerate(_draw(cfg, CORPUS_STREAM, cfg.corpus_scenes, "train", "world corpus")):
        rng = np.random.default_rng([cfg.seed, CORPUS_STREAM, i, 1])
        docs.append(_corpus_doc(scene, rng, language.captions(scene, rng), cfg))
    if docs:
        with open(root / "train" / "corpus.txt", "a") as f:
            f.write("\n" + "\n\n".join(docs) + "\n")


def _speech(root: Path, cfg: WorldConfig) -> dict[str, int]:
    """Spoken clips per split: test questions (--speech, the stream they always had), then train
    questions and captions and val questions from their own streams, so adding these leaves the
    test clips as they were."""
    def records(split: str) -> list[dict]:
        return json.loads((root / split / "instruct.json").read_text())

    counts = {}
    if cfg.speech:
        counts["test"] = write_speech(root / "test", spoken_questions(records("test"), cfg.speech,
                                                                       np.random.default_rng([cfg.seed, 9]), False))
    if cfg.speech_train or cfg.speech_captions:
        rng = np.random.default_rng([cfg.seed, 9, STREAMS["train"]])
        items = spoken_questions(records("train"), cfg.speech_train, rng, True)
        coco = json.loads((root / "train" / "captions.json").read_text())
        items += spoken_captions(coco, cfg.speech_captions, rng)
        counts["train"] = write_speech(root / "train", items)
    if cfg.speech_val:
        rng = np.random.default_rng([cfg.seed, 9, STREAMS["val"]])
        counts["val"] = write_speech(root / "val", spoken_questions(records("val"), cfg.speech_val, rng, True))
    return counts


def recorded_settings(cfg: WorldConfig) -> dict:
    """The settings a world's world.json records: all but where it is written and how many processes drew it
    (neither changes a file), so equal settings mean the same files."""
    return {k: v for k, v in vars(cfg).items() if k not in ("out", "workers")}


def build_world(cfg: WorldConfig) -> dict:
    """Generate the world into ``cfg.out``; returns the summary also written to world.json."""
    if cfg.speech or cfg.speech_train or cfg.speech_captions or cfg.speech_val:
        espeak_path()  # fail before any work, with a clear message
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    sizes = _split_sizes(cfg)
    for split in SPLITS:
        drawn = _draw(cfg, STREAMS[split], sizes[split], split, f"draw {split}")
        _write_split(root, split, STREAMS[split], drawn, cfg)
    _extra_corpus(root, cfg)
    spoken = _speech(root, cfg)
    summary = {
        "format": "mmphi shapes world v1",
        "settings": recorded_settings(cfg),
        "splits": sizes,
        "speech": spoken.get("test", 0),
        "speech_by_split": spoken,
        "shapes": list(scenes.SHAPES), "colours": list(scenes.COLOURS), "positions": list(scenes.POSITIONS),
        "sizes": list(scenes.SIZES), "question_types": list(QUESTION_TYPES),
    }
    _dump(root / "world.json", summary)
    return summary
