"""``embed``: same features from any source format, each image once, resumable, bad files reported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from mmphi.vision.config import EmbedConfig
from mmphi.vision.embed import SHARD_DELAY_ENV, embed
from mmphi.vision.encoder import VisionEncoder
from mmphi.vision.store import FeatureStore, FeatureStoreError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def count_encoded(monkeypatch) -> list[int]:
    """Batch sizes of every VisionEncoder forward pass in this test."""
    calls: list[int] = []
    forward = VisionEncoder.forward

    def counting(self, pixel_values):
        calls.append(int(pixel_values.shape[0]))
        return forward(self, pixel_values)

    monkeypatch.setattr(VisionEncoder, "forward", counting)
    return calls


def _cfg(clip: Path, images: Path, out: Path, **kw) -> EmbedConfig:
    return EmbedConfig(vision=str(clip), images=str(images), out=str(out), **({"shard_size": 16, "batch_size": 8} | kw))


def test_folder_coco_and_llava_give_the_same_keys_and_features(tiny_clip, small_world, tmp_path, count_encoded):
    train = small_world / "train"
    # Like LLaVA-Instruct-150K (158k conversations over 81k images): several records per image, and
    # text-only records without an image.
    records = json.loads((train / "instruct.json").read_text())
    records = records + records[::2] + [{"id": "text-only", "conversations": []}]
    (tmp_path / "instruct.json").write_text(json.dumps(records))
    sources = {"folder": train / "images", "coco": train / "captions.json", "llava": tmp_path / "instruct.json"}
    summaries = {}
    for name, src in sources.items():
        count_encoded.clear()
        summaries[name] = embed(_cfg(tiny_clip, src, tmp_path / name, image_root=str(train / "images")))
        assert sum(count_encoded) == summaries[name]["images"]  # each image encoded exactly once
    n_images = len(list((train / "images").iterdir()))
    assert summaries["llava"]["records"] == len(records) - 1 > n_images == summaries["llava"]["images"]
    assert [summaries[k]["source_format"] for k in summaries] == ["folder", "coco", "llava"]
    folder = FeatureStore.open(tmp_path / "folder")
    assert folder.keys() == sorted(p.name for p in (train / "images").iterdir())  # keys = file names
    for name in ("coco", "llava"):
        other = FeatureStore.open(tmp_path / name, expect=folder.identity)
        assert other.keys() == folder.keys()
        torch.testing.assert_close(other.get_many(other.keys()), folder.get_many(folder.keys()))
    # Every LLaVA record finds its features under its own "image" field.
    llava = FeatureStore.open(tmp_path / "llava")
    assert all(r["image"] in llava for r in records if "image" in r)


def test_stored_features_are_the_encoders(tiny_clip, small_world, tmp_path):
    images = small_world / "val" / "images"
    summary = embed(_cfg(tiny_clip, images, tmp_path / "s", shard_size=4, batch_size=3))
    store = FeatureStore.open(tmp_path / "s")
    enc = VisionEncoder.from_pretrained(str(tiny_clip))
    keys = store.keys()[::-1]  # spans several shards, in an order unlike the rows
    expected = enc.encode([Image.open(images / k) for k in keys])
    torch.testing.assert_close(store.get_many(keys), expected, atol=2e-3, rtol=2e-3)  # fp16 storage
    torch.testing.assert_close(store.get(keys[0]), expected[0], atol=2e-3, rtol=2e-3)
    assert store.get(keys[0]).dtype == torch.float32 and summary["shards_written"] == 2
    saved = json.loads((tmp_path / "s" / "store.json").read_text())
    assert saved["identity"] == enc.identity() and saved["summary"] == summary


def test_bad_files_are_skipped_with_reasons(tiny_clip, small_world, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "images"
    shutil.copytree(small_world / "val" / "images", folder)
    good = sorted(p.name for p in folder.iterdir())
    whole = (folder / good[0]).read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "garbage.jpg").write_bytes(os.urandom(500))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a picture")
    # Decodes fine, but (here, by decree) the image processor cannot take it: only that image is dropped.
    Image.new("RGB", (7, 7)).save(folder / "odd.png")
    preprocess = VisionEncoder.preprocess

    def picky(self, images):
        if any(im.size == (7, 7) for im in images):
            raise ValueError("cannot resize a 7x7 image")
        return preprocess(self, images)

    monkeypatch.setattr(VisionEncoder, "preprocess", picky)
    summary = embed(_cfg(tiny_clip, folder, tmp_path / "s"))
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    reasons = {item["key"]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {"truncated.png", "garbage.jpg", "empty.png", "notes.txt", "odd.png"}
    assert "truncated" in reasons["truncated.png"]
    assert reasons["garbage.jpg"].startswith("not an image")
    assert reasons["odd.png"] == "image processor failed (ValueError: cannot resize a 7x7 image)"
    assert summary["skipped"] == 5 and summary["encoded"] == len(good)
    assert FeatureStore.open(tmp_path / "s").keys() == good
    assert "5 skipped" in capsys.readouterr().err

    # Skipped files are retried on the next run: a repaired file gets in, the others stay reported.
    (folder / "truncated.png").write_bytes(whole)
    summary = embed(_cfg(tiny_clip, folder, tmp_path / "s"))
    assert (summary["encoded"], summary["skipped"], summary["already_in_store"]) == (1, 4, len(good))
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert {item["key"] for item in report["skipped"]} == {"garbage.jpg", "empty.png", "notes.txt", "odd.png"}
    assert "truncated.png" in FeatureStore.open(tmp_path / "s")

    # A COCO file naming an image that is not there: reported too.
    coco = json.loads((small_world / "val" / "captions.json").read_text())
    coco["images"].append({"id": 999, "file_name": "missing.png", "width": 96, "height": 96})
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    embed(_cfg(tiny_clip, tmp_path / "captions.json", tmp_path / "c", image_root=str(folder)))
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert {"key": "missing.png", "path": str(folder / "missing.png"), "reason": "file not found"} in report["skipped"]


def test_appending_with_another_encoder_is_refused(tiny_clip, other_clip, small_world, tmp_path):
    images = small_world / "val" / "images"
    embed(_cfg(tiny_clip, images, tmp_path / "s"))
    with pytest.raises(FeatureStoreError, match=r"cannot be appended to with .*differs in weights"):
        embed(_cfg(other_clip, images, tmp_path / "s"))
    with pytest.raises(FeatureStoreError, match=r"differs in mode: store has 'patch', encoder has 'pooled'"):
        embed(_cfg(tiny_clip, images, tmp_path / "s", mode="pooled"))
    # Same file names from another folder: not the same images.
    (tmp_path / "clash").mkdir()
    val_names = sorted(p.name for p in images.iterdir())
    for name, p in zip(val_names, sorted((small_world / "test" / "images").iterdir()), strict=True):
        shutil.copy(p, tmp_path / "clash" / name)
    with pytest.raises(FeatureStoreError, match=r"6 images of .*clash \(e.g. 'val-000000.png'\) have the same key"):
        embed(_cfg(tiny_clip, tmp_path / "clash", tmp_path / "s"))
    # The same encoder appends new images; the ones already there are not encoded again.
    summary = embed(_cfg(tiny_clip, small_world / "test" / "images", tmp_path / "s"))
    assert summary["encoded"] == summary["images"] == 6 and summary["store_images"] == 12
    summary = embed(_cfg(tiny_clip, small_world / "val" / "captions.json", tmp_path / "s"))
    assert (summary["encoded"], summary["already_in_store"]) == (0, 6)


def test_resume_after_kill_9_skips_finished_shards(tiny_clip, small_world, tmp_path, count_encoded):
    images, out = small_world / "train" / "images", tmp_path / "store"
    n_images = len(list(images.iterdir()))
    code = ("from mmphi.vision.config import EmbedConfig; from mmphi.vision.embed import embed; "
            f"embed(EmbedConfig(vision={str(tiny_clip)!r}, images={str(images)!r}, out={str(out)!r}, "
            "shard_size=8, batch_size=4))")
    # The child sleeps after each shard, so the kill lands after exactly the first one.
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, SHARD_DELAY_ENV: "60"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "shards" / "shard-00000.safetensors"
    deadline = time.monotonic() + 90
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timed out"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # A shard the kill interrupted mid-write exists only under a temporary name: never served.
    partial = out / "shards" / ".shard-00001.safetensors.12345.tmp"
    partial.write_bytes(first.read_bytes()[:1000])
    interrupted = FeatureStore.open(out)
    assert len(interrupted) == 8 and not (out / "index.json").exists()
    before = first.stat()

    summary = embed(_cfg(tiny_clip, images, out, shard_size=8, batch_size=4))
    assert summary["already_in_store"] == 8 and summary["encoded"] == n_images - 8
    assert sum(count_encoded) == n_images - 8  # the finished shard's images were not encoded again
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not partial.exists()
    store = FeatureStore.open(out)
    assert len(store) == n_images
    fresh = embed(_cfg(tiny_clip, images, tmp_path / "fresh", shard_size=8, batch_size=4))
    assert fresh["encoded"] == n_images
    reference = FeatureStore.open(tmp_path / "fresh")
    assert store.keys() == reference.keys()
    torch.testing.assert_close(store.get_many(store.keys()), reference.get_many(store.keys()))


def test_settings_are_validated():
    from mmphi.config import ConfigError, build

    with pytest.raises(ConfigError, match="layer 0 is the patch embedding"):
        EmbedConfig(layer=0)
    with pytest.raises(ConfigError, match="shard_size must be > 0"):
        EmbedConfig(shard_size=0)
    with pytest.raises(ConfigError, match="mode: 'cls' is not one of patch, pooled"):
        build(EmbedConfig, {"mode": "cls"})
    assert build(EmbedConfig, {"layer": "-1", "device": "cuda:1"}).layer == -1


def test_bad_sources_are_clear_errors(tiny_clip, tmp_path):
    from mmphi.vision.embed import EmbedError

    with pytest.raises(EmbedError, match="neither an image folder nor a COCO / LLaVA JSON"):
        embed(_cfg(tiny_clip, tmp_path / "nothing", tmp_path / "s"))
    (tmp_path / "x.json").write_text('{"annotations": []}')
    with pytest.raises(EmbedError, match="neither COCO captions"):
        embed(_cfg(tiny_clip, tmp_path / "x.json", tmp_path / "s"))
    (tmp_path / "y.json").write_text('[{"image": "a.png"}]')
    with pytest.raises(EmbedError, match="image root .*images is not a folder; pass --image-root"):
        embed(_cfg(tiny_clip, tmp_path / "y.json", tmp_path / "s"))


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_split_the_shards(tiny_clip, small_world, tmp_path):
    images, out = small_world / "train" / "images", tmp_path / "store"
    script = tmp_path / "run.py"
    script.write_text("from mmphi.vision.config import EmbedConfig\nfrom mmphi.vision.embed import embed\n"
                      f"embed(EmbedConfig(vision={str(tiny_clip)!r}, images={str(images)!r}, out={str(out)!r}, "
                      "shard_size=8, batch_size=4))\n")
    accelerate = Path(sys.executable).with_name("accelerate")
    # On a machine without CUDA, --multi_gpu still starts the processes (torchrun); embed then uses gloo on CPU.
    run = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "store.json").read_text())["summary"]
    n_images = len(list(images.iterdir()))
    assert summary["encoded"] == n_images == len(FeatureStore.open(out))
    assert run.stderr.count("embed: ") == 1  # only the main process reports
    writers = {}
    for shard in (out / "shards").iterdir():
        with safe_open(str(shard), framework="pt") as f:
            writers[shard.name] = f.metadata()["process"]
    assert len(writers) == n_images // 8 and set(writers.values()) == {"0", "1"}  # both processes did shards
