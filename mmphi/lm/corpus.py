"""Corpus preparation: text -> ``uint16`` token files (``train.bin``, ``val.bin``) for stage 0.

Sources: a shapes world folder (its ``train``/``val`` ``corpus.txt``), plain-text files
(documents separated by blank lines), JSONL files (a ``text`` field per line) or a Hugging
Face dataset streamed with ``hf:NAME[:CONFIG]`` (e.g. ``hf:togethercomputer/RedPajama-Data-1T-Sample``).
Documents are separated by ``<|endoftext|>``. Work is committed in chunks with a progress file,
so an interrupted preparation resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmphi.errors import MmphiError

CHUNK_DOCS = 2000
DTYPE = np.uint16  # Phi-2's 51,200 ids fit
INDEX_DTYPE = np.uint64  # {split}.idx: the offset of every document's first token


class CorpusError(MmphiError):
    pass


def _text_docs(path: Path) -> Iterator[str]:
    """Plain text: documents are separated by one or more blank lines."""
    doc: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                doc.append(line.rstrip("\n"))
            elif doc:
                yield "\n".join(doc)
                doc = []
    if doc:
        yield "\n".join(doc)


def _jsonl_docs(path: Path, field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[field]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CorpusError(f"{path}:{n}: not a JSON object with a {field!r} field ({err})") from err
            if text:
                yield str(text)


def _hf_docs(spec: str, field: str) -> Iterator[str]:
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise CorpusError("streaming a Hugging Face dataset needs the 'datasets' package "
                          "(pip install 'mmphi[data]')") from err
    name, _, config = spec.partition(":")
    for row in load_dataset(name, config or None, split="train", streaming=True):
        if row.get(field):
            yield row[field]


def iter_docs(source: str, field: str = "text") -> Iterator[str]:
    if source.startswith("hf:"):
        return _hf_docs(source[3:], field)
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus source not found: {source}")
    if path.suffix == ".jsonl":
        return _jsonl_docs(path, field)
    return _text_docs(path)


def resolve_sources(data: str) -> tuple[list[str], list[str] | None]:
    """(train sources, val sources or None = hold out a fraction of train documents)."""
    sources = [s for s in data.split(",") if s]
    if len(sources) == 1 and Path(sources[0], "world.json").exists():
        world = Path(sources[0])
        return [str(world / "train" / "corpus.txt")], [str(world / "val" / "corpus.txt")]
    for s in sources:
        if Path(s).is_dir():
            raise CorpusError(f"{s} is a folder but not a shapes world (no world.json) nor prepared tokens "
                              "(no meta.json); pass text or JSONL files")
    return sources, None


class _Writer:
    """Appends token chunks to ``{name}.bin``, each document's first offset to ``{name}.idx``, and
    records the committed sizes in progress.json."""

    def __init__(self, out: Path, progress: dict):
        self.out, self.progress = out, progress
        self.files = {}
        for name in ("train", "val"):
            for suffix, count, dtype in (("bin", "tokens", DTYPE), ("idx", "docs", INDEX_DTYPE)):
                path = out / f"{name}.{suffix}"
                committed = progress.get(f"{name}_{count}", 0) * dtype().itemsize
                with open(path, "ab") as f:  # create, then cut anything written after the last commit
                    f.truncate(committed)
                self.files[f"{name}.{suffix}"] = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, name: str, ids: list[int]) -> None:
        arr = np.asarray(ids, dtype=DTYPE)
        start = self.progress.get(f"{name}_tokens", 0)
        self.files[f"{name}.idx"].write(np.asarray([start], dtype=INDEX_DTYPE).tobytes())
        self.files[f"{name}.bin"].write(arr.tobytes())
        self.progress[f"{name}_tokens"] = start + len(arr)
        self.progress[f"{name}_docs"] = self.progress.get(f"{name}_docs", 0) + 1

    def commit(self, docs_done: int) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
        self.progress["docs_done"] = docs_done
        tmp = self.out / "progress.json.tmp"
        tmp.write_text(json.dumps(self.progress))
        tmp.replace(self.out / "progress.json")

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def _labelled_docs(train: list[str], val: list[str] | None, val_every: int, field: str) -> Iterator[tuple[str, str]]:
    train_docs = itertools.chain.from_iterable(iter_docs(s, field) for s in train)
    if val is None:
        for i, doc in enumerate(train_docs):
            yield ("val" if i % val_every == val_every - 1 else "train"), doc
        return
    yield from (("val", d) for d in itertools.chain.from_iterable(iter_docs(s, field) for s in val))
    yield from (("train", d) for d in train_docs)


def prepare_corpus(data: str, out: Path, tokenizer, val_frac: float = 0.01, max_tokens: int = 0,
                   field: str = "text") -> dict:
    """Tokenize ``data`` into ``out/{train,val}.bin``; resumable; returns ``out/meta.json``'s content."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    train, val = resolve_sources(data)
    progress_path = out / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
    skip = progress.get("docs_done", 0)
    writer = _Writer(out, progress)
    eos = tokenizer.eos_token_id
    docs = _labelled_docs(train, val, max(2, round(1 / val_frac)) if val_frac > 0 else 1 << 62, field)
    done = skip
    bar = tqdm(desc="tokenize", unit="tok", unit_scale=True, initial=progress.get("train_tokens", 0),
               total=max_tokens or None, mininterval=1.0)
    try:
        for chunk in iter(lambda: list(itertools.islice(docs, CHUNK_DOCS)), []):
            if skip > 0:  # documents an interrupted run already committed
                take = min(skip, len(chunk))
                chunk, skip = chunk[take:], skip - take
                if not chunk:
                    continue
            texts = [d for _, d in chunk]
            for (split, _), ids in zip(chunk, tokenizer(texts).input_ids, strict=True):
                writer.write(split, ids + [eos])
            done += len(chunk)
            writer.commit(done)
            bar.n = progress.get("train_tokens", 0)
            bar.refresh()
            if max_tokens and progress.get("train_tokens", 0) >= max_tokens:
                break
    finally:
        writer.close()
        bar.close()
    if not progress.get("train_tokens") or not progress.get("val_tokens"):
        raise CorpusError(f"corpus {data!r} gave {progress.get('train_tokens', 0)} train and "
                          f"{progress.get('val_tokens', 0)} val tokens; both must be non-empty")
    meta = {"sources": data, "tokenizer": getattr(tokenizer, "name_or_path", ""), "dtype": "uint16",
            "eos_id": eos, "docs": done, "train_tokens": progress["train_tokens"],
            "val_tokens": progress["val_tokens"], "complete": True}
    meta_path.write_text(json.dumps(meta, indent=1))
    progress_path.unlink(missing_ok=True)
    return meta


def load_tokens(folder: Path, split: str) -> np.ndarray:
    path = folder / f"{split}.bin"
    if not (folder / "meta.json").exists():
        raise CorpusError(f"{folder} holds no finished corpus (meta.json missing); run the preparation again")
    return np.memmap(path, dtype=DTYPE, mode="r")


def load_doc_starts(folder: Path, split: str) -> np.ndarray | None:
    """Offsets where documents start (None for a corpus prepared before they were recorded)."""
    path = folder / f"{split}.idx"
    return np.fromfile(path, dtype=INDEX_DTYPE).astype(np.int64) if path.exists() else None


def prepare_corpus_cli(cfg) -> dict:
    """``mmphi corpus``: prepare token files with the configured tokenizer."""
    from mmphi.tokenizer import load_tokenizer

    return prepare_corpus(cfg.data, Path(cfg.out), load_tokenizer(cfg.tokenizer), cfg.val_frac, cfg.max_tokens,
                          cfg.text_field)
