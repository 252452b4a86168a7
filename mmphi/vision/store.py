"""A feature store: precomputed vision features on disk, looked up by image key.

Layout of a store directory::

    store.json                      format, encoder identity, summary of the last embed run
    shards/shard-00000.safetensors  "features": (n, num_tokens, feature_dim) fp16; metadata "keys"
                                    (row order) and "skipped" (files that could not be read)
    index.json                      key -> (shard, row) over the shards listed in it (a cache)
    report.json                     the files skipped, each with its reason

Every shard describes itself, and is written to a temporary name then ``os.replace``d, so a
shard is either complete or invisible: a run killed mid-shard leaves nothing that could be
served. ``index.json`` is only a cache of the shards' own key lists; when it does not cover
exactly the shards present (an interrupted run), it is rebuilt from their headers.

Shards are opened with ``safetensors.torch.load_file``, which memory-maps the file: opening is
instant, pages are read on demand, and the OS page cache keeps hot shards in memory.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mmphi.errors import MmphiError

FORMAT = "mmphi-feature-store"
VERSION = 1
SHARD_RE = re.compile(r"^shard-(\d{5,})\.safetensors$")
# Keys that only label what another key decides: the checkpoint path names the weights, whose digest
# is in "weights"; "layer" (-2) and "hidden_index" (L-1) name the same layer. A store moved or embedded
# with an equivalent spelling stays usable.
_LABELS = {"encoder": "weights", "layer": "hidden_index"}


class FeatureStoreError(MmphiError):
    """The feature store is missing, mismatched or lacks a key; the message says which."""


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def identity_mismatch(stored: dict, expect: dict) -> list[str]:
    """Names of the identity fields that differ (fields absent from either side are not compared)."""
    out = []
    for key, value in expect.items():
        if key not in stored or (key in _LABELS and _LABELS[key] in stored and _LABELS[key] in expect):
            continue
        if stored[key] != value:
            out.append(key)
    return out


def describe(identity: dict) -> str:
    layer = f", layer {identity.get('layer')}" if identity.get("mode") == "patch" else ""
    return (f"{identity.get('encoder')!r} ({identity.get('mode')}{layer}, {identity.get('num_tokens')}x"
            f"{identity.get('feature_dim')} features, {identity.get('image_size')} px, "
            f"weights {identity.get('weights')})")


def check_identity(path: Path, stored: dict, expect: dict, action: str = "opened") -> None:
    bad = identity_mismatch(stored, expect)
    if bad:
        details = ", ".join(f"{k}: store has {stored[k]!r}, encoder has {expect[k]!r}" for k in bad)
        raise FeatureStoreError(
            f"feature store {path} was built with encoder {describe(stored)} and cannot be {action} with "
            f"{describe(expect)} (differs in {details}). Embed into a new --out folder, or use the encoder "
            "the store was built with.")


def shard_dir(path: Path) -> Path:
    return Path(path) / "shards"


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def list_shards(path: Path) -> list[str]:
    """Complete shards only (temporary files of an interrupted run do not match the pattern)."""
    folder = shard_dir(path)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if SHARD_RE.match(p.name))


def next_shard_number(path: Path) -> int:
    numbers = []
    for name in list_shards(path):
        match = SHARD_RE.match(name)
        assert match is not None, "list_shards returns names that match SHARD_RE only"
        numbers.append(int(match.group(1)))
    return max(numbers, default=-1) + 1


def read_shard_meta(path: Path, name: str) -> dict:
    """{"keys": [...], "skipped": [{"key", "reason"}, ...], "root": str | None} from a shard's header."""
    with safe_open(str(shard_dir(path) / name), framework="pt") as f:
        meta = f.metadata() or {}
    return {"keys": json.loads(meta.get("keys", "[]")), "skipped": json.loads(meta.get("skipped", "[]")),
            "root": meta.get("root")}


def key_roots(path: Path) -> dict[str, str | None]:
    """Each stored key -> the image folder it was read from (keys are only unique within one folder)."""
    out: dict[str, str | None] = {}
    for name in list_shards(path):
        meta = read_shard_meta(path, name)
        out.update(dict.fromkeys(meta["keys"], meta["root"]))
    return out


def write_shard(path: Path, name: str, features: torch.Tensor, keys: Sequence[str],
                skipped: Sequence[dict] = (), extra: dict[str, str] | None = None) -> None:
    """Write one shard atomically. features: (n, T, D), stored as fp16; ``keys[i]`` names row i.

    ``extra``: more string metadata for the header (e.g. which process wrote the shard).
    """
    if features.shape[0] != len(keys):
        raise ValueError(f"{features.shape[0]} feature rows for {len(keys)} keys")
    half = features.detach().to("cpu", torch.float16).contiguous()
    if not torch.isfinite(half).all():
        raise FeatureStoreError(f"features for shard {name} overflow float16 (|x| > 65504); the encoder's "
                                "activations are too large to store in half precision")
    folder = shard_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    meta = {**(extra or {}), "keys": json.dumps(list(keys)), "skipped": json.dumps(list(skipped))}
    save_file({"features": half}, str(tmp), metadata=meta)
    os.replace(tmp, folder / name)


def remove_partial_shards(path: Path) -> int:
    """Delete temporary shard files left by a killed run; returns how many."""
    folder = shard_dir(path)
    stale = [p for p in folder.glob(".shard-*.tmp")] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def read_manifest(path: Path) -> dict | None:
    file = Path(path) / "store.json"
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise FeatureStoreError(f"{file} is not valid JSON ({err}); the store is damaged") from err
    if manifest.get("format") != FORMAT:
        raise FeatureStoreError(f"{file} is not an mmphi feature store manifest (format {manifest.get('format')!r})")
    return manifest


def build_index(path: Path) -> tuple[list[str], dict[str, tuple[int, int]], dict[str, dict]]:
    """(shards, key -> (shard number in that list, row), skipped key -> {"key", "path", "reason"}).

    Read from the shard headers only.

    A file skipped in one run and embedded in a later one is not reported as skipped.
    """
    shards = list_shards(path)
    index: dict[str, tuple[int, int]] = {}
    skipped: dict[str, dict] = {}
    for i, name in enumerate(shards):
        meta = read_shard_meta(path, name)
        for row, key in enumerate(meta["keys"]):
            index[key] = (i, row)
        for item in meta["skipped"]:
            skipped[item["key"]] = item
    return shards, index, {k: r for k, r in skipped.items() if k not in index}


def write_index(path: Path) -> tuple[list[str], dict[str, tuple[int, int]], dict[str, dict]]:
    shards, index, skipped = build_index(path)
    write_json(Path(path) / "index.json", {"shards": shards, "index": index})
    return shards, index, skipped


class FeatureStore:
    """Read side of a store: ``get``/``get_many`` by image key, float32 out."""

    def __init__(self, path: Path, identity: dict, shards: list[str], index: dict[str, tuple[int, int]]) -> None:
        self.path = Path(path)
        self.identity = identity
        self.num_tokens: int = identity["num_tokens"]
        self.feature_dim: int = identity["feature_dim"]
        self.shards = shards
        self._index = index
        self._tensors: dict[int, torch.Tensor] = {}

    @classmethod
    def open(cls, path: str | Path, expect: dict | None = None) -> FeatureStore:
        """Open a store; ``expect`` (e.g. ``encoder.identity()``) must match the store's encoder identity."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest is None:
            raise FeatureStoreError(f"no feature store at {path} (store.json is missing); create one with "
                                    f"'mmphi embed --out {path}'")
        identity = manifest["identity"]
        if expect is not None:
            check_identity(path, identity, expect)
        shards = list_shards(path)
        index = cls._cached_index(path, shards)
        if index is None:  # an interrupted or concurrent run: derive from the complete shards
            _, index, _ = build_index(path)
        return cls(path, identity, shards, index)

    @staticmethod
    def _cached_index(path: Path, shards: list[str]) -> dict[str, tuple[int, int]] | None:
        file = path / "index.json"
        if not file.exists():
            return None
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError:
            return None
        if data.get("shards") != shards:
            return None
        return {k: (int(s), int(r)) for k, (s, r) in data["index"].items()}

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> list[str]:
        """All image keys, sorted."""
        return sorted(self._index)

    def __getstate__(self) -> dict:
        # DataLoader workers re-map the shards themselves rather than pickling tensors.
        state = self.__dict__.copy()
        state["_tensors"] = {}
        return state

    def _shard(self, number: int) -> torch.Tensor:
        tensor = self._tensors.get(number)
        if tensor is None:
            file = shard_dir(self.path) / self.shards[number]
            try:
                tensor = load_file(str(file))["features"]  # (n, T, D) fp16, memory-mapped
            except (SafetensorError, OSError, KeyError) as err:
                raise FeatureStoreError(f"{file} cannot be read ({err}); the store is damaged: delete that shard "
                                        "and run `mmphi embed` again into the same store to encode its images anew"
                                        ) from err
            if tuple(tensor.shape[1:]) != (self.num_tokens, self.feature_dim):
                raise FeatureStoreError(f"{file} holds {tuple(tensor.shape[1:])} features but the store's "
                                        f"identity says ({self.num_tokens}, {self.feature_dim}); the store is damaged")
            self._tensors[number] = tensor
        return tensor

    def _locate(self, key: str) -> tuple[int, int]:
        try:
            return self._index[key]
        except KeyError:
            raise FeatureStoreError(f"image {key!r} is not in the feature store {self.path} ({len(self)} images); "
                                    "run 'mmphi embed' on the images this data uses (skipped files are listed "
                                    f"in {self.path / 'report.json'})") from None

    def get(self, key: str) -> torch.Tensor:
        """(num_tokens, feature_dim) float32."""
        shard, row = self._locate(key)
        return self._shard(shard)[row].float()

    def get_many(self, keys: Sequence[str]) -> torch.Tensor:
        """(B, num_tokens, feature_dim) float32, one gather per shard involved."""
        where = torch.tensor([self._locate(k) for k in keys], dtype=torch.long).reshape(-1, 2)  # (B, 2)
        out = torch.empty(len(keys), self.num_tokens, self.feature_dim)
        for shard in where[:, 0].unique().tolist():
            sel = (where[:, 0] == shard).nonzero().squeeze(1)  # batch positions served by this shard
            out[sel] = self._shard(shard)[where[sel, 1]].float()
        return out
