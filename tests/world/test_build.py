"""The shapes world: formats, determinism, disjoint splits, and answers that are true."""

from __future__ import annotations

import hashlib
import json
import re
import wave
from pathlib import Path

import pytest
from PIL import Image

from mmphi.cli import main
from mmphi.world.build import build_world
from mmphi.world.config import WorldConfig

COLOURS = {"red", "green", "blue", "yellow", "purple", "orange"}
SHAPES = {"circle", "square", "triangle", "diamond"}
PLACES = {"on the left": "left", "on the right": "right", "at the top": "top",
          "at the bottom": "bottom", "in the centre": "centre"}
NUMBERS = ["zero", "one", "two", "three", "four", "five"]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mentions(question: str) -> dict:
    """What a question names, read with plain string matching (independent of the generator)."""
    q = question.lower().rstrip("?")
    words = set(re.findall(r"[a-z]+", q))
    shapes = {s for s in SHAPES if s in words or s + "s" in words}
    return {"colours": COLOURS & words, "shapes": shapes,
            "places": {pos for phrase, pos in PLACES.items() if phrase in q}}


def _expected(kind: str, question: str, objects: list[dict]):
    m = _mentions(question)
    hits = [o for o in objects
            if (not m["colours"] or o["colour"] in m["colours"])
            and (not m["shapes"] or o["shape"] in m["shapes"])
            and (not m["places"] or o["position"] in m["places"])]
    if kind == "count":
        return NUMBERS[len(hits)]
    if kind == "yesno":
        return "yes" if hits else "no"
    assert len(hits) == 1, f"ambiguous question {question!r} for {objects}"
    return {"colour": hits[0]["colour"], "shape": hits[0]["shape"], "position": hits[0]["position"]}[kind]


def _described(answer: str) -> set:
    found = re.findall(r"(small|large) (\w+) (\w+) (on the left|on the right|at the top|at the bottom|"
                       r"in the centre)", answer)
    return {(size, colour, shape, PLACES[place]) for size, colour, shape, place in found}


def test_formats_load_with_json_and_pil(small_world):
    summary = json.loads((small_world / "world.json").read_text())
    assert sum(summary["splits"].values()) == 60
    for split in ("train", "val", "test"):
        d = small_world / split
        coco = json.loads((d / "captions.json").read_text())
        assert {"images", "annotations"} <= set(coco)
        ids = {im["id"] for im in coco["images"]}
        assert len(ids) == summary["splits"][split]
        assert all(a["image_id"] in ids and a["caption"] for a in coco["annotations"])
        assert len(coco["annotations"]) == 5 * len(ids)
        for im in coco["images"][:5]:
            with Image.open(d / "images" / im["file_name"]) as img:
                assert img.size == (im["width"], im["height"]) and img.mode == "RGB"
        records = json.loads((d / "instruct.json").read_text())
        for r in records:
            assert {"id", "image", "conversations", "types"} <= set(r)
            roles = [t["from"] for t in r["conversations"]]
            assert roles == ["human", "gpt"] * (len(roles) // 2)
            assert len(r["types"]) == len(roles) // 2
            assert sum("<image>" in t["value"] for t in r["conversations"]) == 1
        docs = (d / "corpus.txt").read_text().strip().split("\n\n")
        assert len(docs) >= summary["splits"][split] and all(doc.startswith("USER: ") for doc in docs)


def test_image_placeholder_at_start_and_end(small_world):
    records = json.loads((small_world / "train" / "instruct.json").read_text())
    firsts = [r["conversations"][0]["value"] for r in records]
    assert any(f.startswith("<image>\n") for f in firsts)
    assert any(f.endswith("\n<image>") for f in firsts)


def test_every_answer_is_true_of_its_scene(small_world):
    checked = set()
    for split in ("train", "val", "test"):
        truth = {s["file_name"]: s["objects"] for s in json.loads((small_world / split / "scenes.json").read_text())}
        for r in json.loads((small_world / split / "instruct.json").read_text()):
            objects = truth[r["image"]]
            conv = r["conversations"]
            for k, kind in enumerate(r["types"]):
                q = conv[2 * k]["value"].replace("<image>", "").strip()
                a = conv[2 * k + 1]["value"]
                if kind == "describe":
                    expect = {(o["size"], o["colour"], o["shape"], o["position"]) for o in objects}
                    assert _described(a) == expect, (q, a, objects)
                else:
                    assert a == _expected(kind, q, objects), (q, a, objects)
                checked.add(kind)
    assert checked == {"colour", "shape", "count", "position", "yesno", "describe"}


def test_splits_are_disjoint(small_world):
    def signatures(split):
        scenes = json.loads((small_world / split / "scenes.json").read_text())
        return {tuple(sorted((o["shape"], o["colour"], o["size"], o["position"]) for o in s["objects"]))
                for s in scenes}
    train, val, test = signatures("train"), signatures("val"), signatures("test")
    assert not (train & val) and not (train & test) and not (val & test)
    # Nor does the train corpus describe a val/test scene in its canonical words.
    corpus = (small_world / "train" / "corpus.txt").read_text()
    for split in ("val", "test"):
        for s in json.loads((small_world / split / "scenes.json").read_text()):
            if len(s["objects"]) == 3:
                caps = json.loads((small_world / split / "captions.json").read_text())["annotations"]
                canonical = next(c["caption"] for c in caps if c["image_id"] == s["id"])
                assert canonical not in corpus




def test_splits_share_one_distribution(tmp_path):
    # Scenes go to a split by a hash of what they contain, so even a world far larger than the
    # number of distinct one-object scenes keeps them in every split (train included).
    build_world(WorldConfig(out=str(tmp_path), scenes=3000, corpus_scenes=0, seed=0))
    share = {}
    for split in ("train", "val", "test"):
        scenes = json.loads((tmp_path / split / "scenes.json").read_text())
        share[split] = sum(len(s["objects"]) == 1 for s in scenes) / len(scenes)
    assert all(0.2 < v < 0.45 for v in share.values()), share  # a third of draws have one object
def test_speech_files(small_world):
    items = json.loads((small_world / "test" / "speech.json").read_text())
    assert len(items) == 4
    for it in items:
        with wave.open(str(small_world / "test" / it["audio"])) as w:
            assert w.getnframes() / w.getframerate() > 0.5
        assert it["question"] and it["answer"] and "<image>" not in it["question"]


def test_same_seed_gives_identical_files(tmp_path, small_world):
    build_world(WorldConfig(out=str(tmp_path), scenes=60, corpus_scenes=40, speech=4, seed=3))
    assert _digest(tmp_path) == _digest(small_world)


def test_the_images_are_the_same_drawn_by_one_process_or_several(tmp_path, small_world, monkeypatch):
    monkeypatch.setattr("mmphi.world.build.RENDER_CHUNK", 7)  # the 48 train scenes in 7 jobs
    build_world(WorldConfig(out=str(tmp_path / "one"), scenes=60, corpus_scenes=40, speech=4, seed=3, workers=1))
    build_world(WorldConfig(out=str(tmp_path / "two"), scenes=60, corpus_scenes=40, speech=4, seed=3, workers=2))
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two") == _digest(small_world)


def test_other_seed_differs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_world(WorldConfig(out=str(a), scenes=9, corpus_scenes=0, seed=1))
    build_world(WorldConfig(out=str(b), scenes=9, corpus_scenes=0, seed=2))
    assert _digest(a) != _digest(b)


def test_a_world_rebuilt_without_speech_lists_no_clips(tmp_path):
    build_world(WorldConfig(out=str(tmp_path), scenes=30, corpus_scenes=0, speech=2, speech_val=1, seed=5))
    assert (tmp_path / "test" / "speech.json").exists() and (tmp_path / "val" / "speech.json").exists()
    build_world(WorldConfig(out=str(tmp_path), scenes=30, corpus_scenes=0, seed=5))
    assert not list(tmp_path.glob("*/speech.json")) and not list(tmp_path.glob("*/speech"))


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("mmphi.world.speech.shutil.which", lambda name: None)
    code = main(["world", "--out", str(tmp_path / "w"), "--scenes", "9", "--speech", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "espeak-ng is not installed" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", [["--scenes", "2"], ["--max-objects", "9"], ["--image-size", "50"]])
def test_bad_settings_rejected(bad, capsys):
    assert main(["world", *bad]) == 2


def test_long_corpus_documents_ask_new_questions_and_describe_only_when_allowed(tmp_path):
    build_world(WorldConfig(out=str(tmp_path), scenes=3, corpus_scenes=300, corpus_rounds=[8, 12],
                            corpus_describe=0.0, seed=0))
    docs = (tmp_path / "train" / "corpus.txt").read_text().strip().split("\n\n")
    rounds = 0
    for doc in docs:
        asked = set()
        for q, ans in re.findall(r"USER: (?:[^\n]*\n)?([^\n]*?\?)(?:\n[^\n]*)? ASSISTANT: ([^<\n]*)", doc):
            assert len(ans.split()) <= 2, f"a describe answer despite corpus_describe=0: {ans!r}"
            m = _mentions(q)
            key = (ans in COLOURS, ans in SHAPES, ans in NUMBERS, ans in ("yes", "no"),
                   frozenset(m["colours"]), frozenset(m["shapes"]), frozenset(m["places"]))
            assert key not in asked, f"the same question twice in one document: {q!r}\n{doc}"
            asked.add(key)
            rounds += 1
    assert rounds / len(docs) > 6  # long documents, with few scenes short of new questions


def test_more_train_scenes_and_describe_first_leave_val_and_test_unchanged(tmp_path):
    base, more = tmp_path / "base", tmp_path / "more"
    build_world(WorldConfig(out=str(base), scenes=30, corpus_scenes=0, seed=4))
    build_world(WorldConfig(out=str(more), scenes=30, train_scenes=60, describe_first=0.5, corpus_scenes=0, seed=4))
    for split in ("val", "test"):
        for name in ("instruct.json", "captions.json", "scenes.json", "corpus.txt"):
            assert (base / split / name).read_bytes() == (more / split / name).read_bytes(), (split, name)
    records = json.loads((more / "train" / "instruct.json").read_text())
    assert len(records) == 60
    old = json.loads((base / "train" / "instruct.json").read_text())
    assert json.loads((more / "train" / "scenes.json").read_text())[:len(old)] == \
        json.loads((base / "train" / "scenes.json").read_text())  # the first train scenes are the same ones
    opening = [r for r in records if r["types"][0] == "describe"]
    assert 15 <= len(opening) <= 45  # about half open by describing the image
    coco = json.loads((more / "train" / "captions.json").read_text())
    canonical: dict[str, str] = {}
    for ann in coco["annotations"]:  # an image's first caption is its canonical description
        canonical.setdefault(coco["images"][ann["image_id"]]["file_name"], ann["caption"])
    for r in opening:
        assert r["types"].count("describe") == 1 and r["conversations"][0]["value"].replace("<image>", "").strip()
        assert r["conversations"][1]["value"] == canonical[r["image"]]  # the answer describes this very image


def test_colour_position_rounds_are_true_new_and_only_in_train(tmp_path):
    base, more = tmp_path / "base", tmp_path / "more"
    build_world(WorldConfig(out=str(base), scenes=40, train_scenes=200, corpus_scenes=0, seed=6))
    build_world(WorldConfig(out=str(more), scenes=40, train_scenes=200, colour_position=1.0, corpus_scenes=0, seed=6))
    for split in ("val", "test"):
        assert (base / split / "instruct.json").read_bytes() == (more / split / "instruct.json").read_bytes()
    old = json.loads((base / "train" / "instruct.json").read_text())
    new = json.loads((more / "train" / "instruct.json").read_text())
    truth = json.loads((more / "train" / "scenes.json").read_text())
    added = 0
    for before, after, scene in zip(old, new, truth, strict=True):
        assert after["conversations"][:len(before["conversations"])] == before["conversations"]
        extra = after["conversations"][len(before["conversations"]):]
        colours = [o["colour"] for o in scene["objects"]]
        if not extra:  # one object, no colour of its own, or that very question already asked
            continue
        added += 1
        assert len(extra) == 2 and after["types"][-1] == "position" and len(colours) >= 2
        q, ans = extra[0]["value"], extra[1]["value"]
        assert re.fullmatch(r"(Where is|In which part of the image is) the \w+ shape( located)?\?", q), q
        assert ans == _expected("position", q, scene["objects"])
        asked = [c["value"].replace("<image>", "").strip() for c in before["conversations"][0::2]]
        earlier = zip(asked, before["types"], strict=True)
        assert not any(_mentions(a) == _mentions(q) and t == "position" for a, t in earlier)
    assert added > 60  # most scenes of several objects get one
