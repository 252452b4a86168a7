"""FeatureStore: identity checks, clear errors, and an index that only ever covers complete shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmphi.vision import store as fs
from mmphi.vision.config import EmbedConfig
from mmphi.vision.embed import embed
from mmphi.vision.encoder import VisionEncoder
from mmphi.vision.store import FeatureStore, FeatureStoreError


@pytest.fixture(scope="module")
def val_store(tiny_clip, small_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store")
    embed(EmbedConfig(vision=str(tiny_clip), images=str(small_world / "val" / "images"), out=str(out),
                      shard_size=4, batch_size=4))
    return out


def test_opening_with_another_encoder_fails_clearly(val_store, tiny_clip, other_clip):
    same = VisionEncoder.from_pretrained(str(tiny_clip)).identity()
    assert len(FeatureStore.open(val_store, expect=same)) == 6
    # The same weights under another path spelling (a moved checkpoint) are the same encoder.
    assert len(FeatureStore.open(val_store, expect=same | {"encoder": "elsewhere/clip"})) == 6
    with pytest.raises(FeatureStoreError) as err:
        FeatureStore.open(val_store, expect=VisionEncoder.from_pretrained(str(other_clip)).identity())
    message = str(err.value)
    assert f"{val_store} was built with encoder '{tiny_clip}'" in message
    assert "cannot be opened with" in message and "differs in weights" in message
    pooled = VisionEncoder.from_pretrained(str(tiny_clip), mode="pooled").identity()
    with pytest.raises(FeatureStoreError, match="differs in mode: store has 'patch', encoder has 'pooled'"):
        FeatureStore.open(val_store, expect=pooled)
    # A partial expectation (what a consumer of the features needs) is checked field by field.
    with pytest.raises(FeatureStoreError, match="differs in feature_dim: store has 64, encoder has 768"):
        FeatureStore.open(val_store, expect={"feature_dim": 768, "num_tokens": 9})


def test_missing_key_error_names_the_key(val_store):
    store = FeatureStore.open(val_store)
    with pytest.raises(FeatureStoreError, match=r"image 'nope/000123.jpg' is not in the feature store"):
        store.get("nope/000123.jpg")
    with pytest.raises(FeatureStoreError, match=r"image 'missing.png' is not in"):
        store.get_many([store.keys()[0], "missing.png"])
    assert "missing.png" not in store and store.keys()[0] in store


def test_get_many_keeps_the_order_asked_for(val_store):
    store = FeatureStore.open(val_store)
    keys = [store.keys()[i] for i in (5, 0, 3, 0, 2)]  # several shards, a repeat
    batch = store.get_many(keys)
    assert batch.shape == (5, store.num_tokens, store.feature_dim) == (5, 9, 64) and batch.dtype == torch.float32
    for row, key in zip(batch, keys, strict=True):
        assert torch.equal(row, store.get(key))
    assert not torch.equal(batch[0], batch[1])


def test_no_store_and_stale_index(val_store, tmp_path):
    with pytest.raises(FeatureStoreError, match=r"no feature store at .* \(store.json is missing\)"):
        FeatureStore.open(tmp_path)
    # index.json only covers the shards it lists: with a shard gone (or added), it is rebuilt from the shards.
    copy = tmp_path / "copy"
    (copy / "shards").mkdir(parents=True)
    for f in ("store.json", "index.json"):
        (copy / f).write_text((val_store / f).read_text())
    shards = fs.list_shards(val_store)
    for name in shards[1:]:
        (copy / "shards" / name).symlink_to(val_store / "shards" / name)
    first = set(fs.read_shard_meta(val_store, shards[0])["keys"])
    store = FeatureStore.open(copy)
    assert set(store.keys()) == set(FeatureStore.open(val_store).keys()) - first
    assert json.loads((copy / "index.json").read_text())["shards"] == shards  # the cache itself is left alone


def test_write_shard_is_atomic_and_refuses_fp16_overflow(tmp_path):
    fs.write_shard(tmp_path, "shard-00000.safetensors", torch.ones(2, 3, 4), ["a", "b"])
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["shard-00000.safetensors"]
    with pytest.raises(FeatureStoreError, match="overflow float16"):
        fs.write_shard(tmp_path, "shard-00001.safetensors", torch.full((1, 3, 4), 1e6), ["c"])
    assert fs.list_shards(tmp_path) == ["shard-00000.safetensors"]


def test_a_damaged_shard_is_named_and_embedding_again_repairs_it(val_store, tiny_clip, small_world, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(val_store, copy)
    shards = fs.list_shards(copy)
    damaged = copy / "shards" / shards[0]
    raw = damaged.read_bytes()
    at = raw.index(b'"process')
    damaged.write_bytes(raw[:at] + raw[at + 1:])  # one header byte edited away: its length field now lies
    store = FeatureStore.open(copy)
    key = fs.read_shard_meta(val_store, shards[0])["keys"][0]
    with pytest.raises(FeatureStoreError, match=rf"{shards[0]} cannot be read .* the store is damaged: delete"):
        store.get(key)
    damaged.unlink()
    embed(EmbedConfig(vision=str(tiny_clip), images=str(small_world / "val" / "images"), out=str(copy),
                      shard_size=4, batch_size=4))
    repaired = FeatureStore.open(copy)
    assert set(repaired.keys()) == set(FeatureStore.open(val_store).keys())
    assert torch.equal(repaired.get(key), FeatureStore.open(val_store).get(key))
