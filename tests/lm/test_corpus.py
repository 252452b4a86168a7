from __future__ import annotations

import json

import numpy as np
import pytest

from mmphi.lm import corpus
from mmphi.lm.corpus import CorpusError, load_doc_starts, load_tokens, prepare_corpus
from mmphi.tokenizer import EOS_ID, build_offline_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_offline_tokenizer()


def test_text_and_jsonl_with_eos_between_documents(tmp_path, tok):
    txt = tmp_path / "a.txt"
    txt.write_text("Hello world\nsecond line\n\n\nAnother doc\n")
    jl = tmp_path / "b.jsonl"
    jl.write_text(json.dumps({"text": "Third doc"}) + "\n" + json.dumps({"text": "Fourth doc"}) + "\n")
    meta = prepare_corpus(f"{txt},{jl}", tmp_path / "out", tok, val_frac=0.25)
    train, val = load_tokens(tmp_path / "out", "train"), load_tokens(tmp_path / "out", "val")
    assert train.dtype == np.uint16 and meta["docs"] == 4
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)
    text = tok.decode(np.concatenate([train, val]).tolist())
    for doc in ("Hello world\nsecond line", "Another doc", "Third doc", "Fourth doc"):
        assert doc + "<|endoftext|>" in text
    assert int((np.concatenate([train, val]) == EOS_ID).sum()) == 4
    assert tok.decode(val.tolist()) == "Fourth doc<|endoftext|>"  # every 4th document is held out
    starts = load_doc_starts(tmp_path / "out", "train")
    assert [tok.decode(train[s:s + 2].tolist()) for s in starts] == ["Hello world", "Another doc", "Third doc"]


def test_world_uses_its_own_val_split(small_world, tmp_path, tok):
    meta = prepare_corpus(str(small_world), tmp_path / "w", tok)
    val_text = tok.decode(load_tokens(tmp_path / "w", "val").tolist())
    first_doc = (small_world / "val" / "corpus.txt").read_text().split("\n\n")[0]
    assert val_text.startswith(first_doc + "<|endoftext|>USER: ")
    assert meta["train_tokens"] > meta["val_tokens"] > 0


def test_interrupted_preparation_resumes_to_identical_files(tmp_path, tok, monkeypatch):
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(f"document number {i} says hello" for i in range(50)))
    clean = prepare_corpus(str(src), tmp_path / "clean", tok, val_frac=0.1)
    monkeypatch.setattr(corpus, "CHUNK_DOCS", 7)
    calls = {"n": 0}
    original = corpus._Writer.commit

    def crash_after_two(self, done):
        original(self, done)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(corpus._Writer, "commit", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(str(src), tmp_path / "resumed", tok, val_frac=0.1)
    assert json.loads((tmp_path / "resumed" / "progress.json").read_text())["docs_done"] == 14
    with open(tmp_path / "resumed" / "train.bin", "ab") as f:  # bytes written after the last commit
        f.write(b"\x01\x02\x03")
    monkeypatch.setattr(corpus._Writer, "commit", original)
    again = prepare_corpus(str(src), tmp_path / "resumed", tok, val_frac=0.1)
    assert again["train_tokens"] == clean["train_tokens"] and again["docs"] == 50
    for name in ("train.bin", "val.bin", "train.idx", "val.idx"):
        resumed, clean_bytes = (tmp_path / d / name for d in ("resumed", "clean"))
        assert resumed.read_bytes() == clean_bytes.read_bytes()


def test_size_cap(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_DOCS", 5)
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(f"doc {i} " + "word " * 20 for i in range(100)))
    meta = prepare_corpus(str(src), tmp_path / "o", tok, val_frac=0.1, max_tokens=200)
    assert 200 <= meta["train_tokens"] < 400


def test_bad_sources_are_clear_errors(tmp_path, tok):
    with pytest.raises(CorpusError, match="not found"):
        prepare_corpus(str(tmp_path / "nope.txt"), tmp_path / "o1", tok)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(CorpusError, match="bad.jsonl:1"):
        prepare_corpus(str(bad), tmp_path / "o2", tok)
