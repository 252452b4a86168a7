"""An audio feature store: stacked Whisper encoder features of spoken clips, looked up by clip key.

Laid out and written like the image feature store (``mmphi.vision.store``: sharded, each shard
written to a temporary name and renamed, resumable, de-duplicated, unreadable clips reported
with their reason), except that clips differ in length: a shard holds ``features``
(total tokens, feature_dim) fp16 and ``offsets`` (n + 1,), clip ``i`` being rows
``offsets[i]:offsets[i + 1]``.

Keys are clip paths relative to the world folder (``train/speech/0000.wav``), so every split's
clips live in one store. ``mmphi embed-audio --data WORLD --out STORE`` fills it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mmphi.audio.decode import AudioError
from mmphi.errors import MmphiError
from mmphi.vision import store as fs

FORMAT = "mmphi-audio-feature-store"


def write_shard(path: Path, name: str, clips: Sequence[torch.Tensor], keys: Sequence[str],
                skipped: Sequence[dict], feature_dim: int) -> None:
    """One shard, atomically: clip ``i`` (tokens_i, D) is rows offsets[i]:offsets[i+1] of ``features``."""
    lengths = torch.tensor([c.shape[0] for c in clips], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    feats = torch.cat(list(clips)) if clips else torch.empty(0, feature_dim)
    half = feats.to(torch.float16).contiguous()
    if not torch.isfinite(half).all():
        raise fs.FeatureStoreError(f"audio features for shard {name} overflow float16")
    folder = fs.shard_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    save_file({"features": half, "offsets": offsets}, str(tmp),
              metadata={"keys": json.dumps(list(keys)), "skipped": json.dumps(list(skipped))})
    tmp.replace(folder / name)


class AudioFeatureStore:
    """Read side: ``get`` one clip's (tokens, D) features, ``get_many`` a padded batch with lengths."""

    def __init__(self, path: Path, identity: dict, shards: list[str], index: dict[str, tuple[int, int]]):
        self.path, self.identity, self.shards, self._index = Path(path), identity, shards, index
        self.feature_dim: int = identity["feature_dim"]
        self._tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def open(cls, path: str | Path, expect: dict | None = None) -> AudioFeatureStore:
        path = Path(path)
        manifest = read_manifest(path)
        if manifest is None:
            raise fs.FeatureStoreError(f"no audio feature store at {path} (store.json is missing); create one "
                                       f"with 'mmphi embed-audio --out {path}'")
        if expect is not None:
            _check(path, manifest["identity"], expect, "opened")
        shards, index, _ = fs.build_index(path)
        return cls(path, manifest["identity"], shards, index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _shard(self, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        if number not in self._tensors:
            t = load_file(str(fs.shard_dir(self.path) / self.shards[number]))
            self._tensors[number] = (t["features"], t["offsets"])
        return self._tensors[number]

    def _rows(self, key: str) -> tuple[torch.Tensor, int, int]:
        try:
            shard, row = self._index[key]
        except KeyError:
            raise fs.FeatureStoreError(f"clip {key!r} is not in the audio feature store {self.path} ({len(self)} "
                                       "clips); run 'mmphi embed-audio' on the world that has it") from None
        feats, offsets = self._shard(shard)
        return feats, int(offsets[row]), int(offsets[row + 1])

    def tokens(self, key: str) -> int:
        """How many tokens (stacked frames) the clip has."""
        _, a, b = self._rows(key)
        return b - a

    def get(self, key: str) -> torch.Tensor:
        feats, a, b = self._rows(key)
        return feats[a:b].float()

    def get_many(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, longest, D) float32 zero-padded, (B,) lengths)."""
        return pad_clips([self.get(k) for k in keys], self.feature_dim)


def pad_clips(clips: Sequence[torch.Tensor], feature_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([c.shape[0] for c in clips], dtype=torch.long)
    out = torch.zeros(len(clips), int(lengths.max()) if len(clips) else 0, feature_dim)
    for i, c in enumerate(clips):
        out[i, : c.shape[0]] = c
    return out, lengths


def read_manifest(path: Path) -> dict | None:
    file = Path(path) / "store.json"
    if not file.exists():
        return None
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT:
        raise fs.FeatureStoreError(f"{file} is not an mmphi audio feature store (format {manifest.get('format')!r})")
    return manifest


def _check(path: Path, stored: dict, expect: dict, action: str) -> None:
    bad = fs.identity_mismatch(stored, expect)
    if bad:
        details = ", ".join(f"{k}: store has {stored[k]!r}, encoder has {expect[k]!r}" for k in bad)
        raise fs.FeatureStoreError(f"audio feature store {path} cannot be {action} with this speech encoder "
                                   f"(differs in {details}); embed into a new --out folder")


def clip_keys(data: Path) -> tuple[Path, list[str]]:
    """(root, clip keys) of a world folder (every split's speech.json) or one split folder."""
    splits = [data / s for s in ("train", "val", "test")] if (data / "world.json").exists() else [data]
    root = data if (data / "world.json").exists() else data.parent
    keys = []
    for split in splits:
        listing = split / "speech.json"
        if listing.exists():
            keys += [f"{split.name}/{it['audio']}" for it in json.loads(listing.read_text())]
    if not keys:
        raise MmphiError(f"{data} has no spoken clips (no speech.json); make them with `mmphi world --speech-train N "
                         "--speech-captions N --speech-val N`")
    return root, sorted(set(keys))


def embed_audio(cfg) -> dict:
    """``mmphi embed-audio``: every clip of ``cfg.data`` not yet in the store ``cfg.out``, shard by shard."""
    from mmphi.audio.features import AudioEncoder

    start = time.perf_counter()
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    root, keys = clip_keys(Path(cfg.data))
    encoder = AudioEncoder(cfg.encoder or None, stack=cfg.stack, max_seconds=cfg.max_seconds)
    identity, out = encoder.identity(), Path(cfg.out)
    manifest = read_manifest(out)
    if manifest is not None:
        _check(out, manifest["identity"], identity, "appended to")
    out.mkdir(parents=True, exist_ok=True)
    if manifest is None:
        fs.write_json(out / "store.json", {"format": FORMAT, "identity": identity})
    fs.remove_partial_shards(out)
    _, present, _ = fs.build_index(out)
    todo = [k for k in keys if k not in present]
    if not todo and manifest is not None and "summary" in manifest:  # nothing new: keep the last run's figures
        print(f"embed-audio: all {len(keys)} clips are already in {out}", file=sys.stderr)
        return {**manifest["summary"], "already_in_store": len(keys), "encoded": 0}
    number = fs.next_shard_number(out)
    seconds = 0.0
    with tqdm(total=len(todo), desc="embed audio", unit="clip", disable=None, mininterval=0.5) as bar:
        for s in range(0, len(todo), cfg.shard_size):
            clips, kept, skipped = [], [], []
            for key in todo[s:s + cfg.shard_size]:
                t0 = time.perf_counter()
                try:
                    clips.append(encoder.encode(root / key))
                    kept.append(key)
                except AudioError as err:  # NoSpeechError too: a clip without speech is reported, not stored
                    skipped.append({"key": key, "path": str(root / key), "reason": str(err)})
                seconds += time.perf_counter() - t0
                bar.update(1)
            write_shard(out, fs.shard_name(number), clips, kept, skipped, encoder.feature_dim)
            number += 1
    _, index, skipped_all = fs.write_index(out)
    store = AudioFeatureStore.open(out)
    tokens = [store.tokens(k) for k in index]
    summary = {"store": str(out), "data": cfg.data, "clips": len(keys), "encoded": len(todo) - sum(
        1 for k in skipped_all if k in todo), "already_in_store": len(keys) - len(todo), "store_clips": len(index),
        "skipped": len(skipped_all), "ms_per_clip": round(1000 * seconds / max(len(todo), 1), 1),
        "total_seconds": round(time.perf_counter() - start, 1), "feature_dim": identity["feature_dim"],
        "tokens_per_s": identity["tokens_per_s"],
        "tokens_per_clip": {"mean": round(sum(tokens) / max(len(tokens), 1), 1), "max": max(tokens, default=0)}}
    fs.write_json(out / "report.json", {"store": str(out), "skipped": [skipped_all[k] for k in sorted(skipped_all)]})
    fs.write_json(out / "store.json", {"format": FORMAT, "identity": identity, "summary": summary})
    print(f"embed-audio: {summary['encoded']} clips encoded ({summary['ms_per_clip']} ms each), "
          f"{summary['already_in_store']} already in the store, {len(skipped_all)} skipped; {out} holds "
          f"{len(index)} clips", file=sys.stderr)
    return summary
