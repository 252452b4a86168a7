"""``mmphi embed``: precompute vision features for a set of images into a feature store.

SRC is an image folder, a COCO captions JSON (``images[].file_name``) or a LLaVA-Instruct JSON
(``[].image``). Keys are the file names relative to the image root, exactly as the COCO / LLaVA
records spell them, so a training record finds its features with ``store.get(record["image"])``.
Each image is encoded once however many records use it.

Work is cut into shards of ``shard_size`` images (sorted keys, so every process and every rerun
plans the same shards). Under ``accelerate launch`` each process takes every N-th shard; the main
process writes the index, the report and the summary once all are done. A rerun (after a crash or
``kill -9``) skips the images already in complete shards; new images are appended as new shards.
Unreadable files are skipped, each with its reason, into ``STORE/report.json``, and retried on
the next run. One embed job (one ``accelerate launch``) per store at a time: a starting run
deletes the temporary files a killed one left behind.

Multi-process on CPU: ``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath;
without CUDA the processes talk over gloo). ``accelerate launch --cpu`` starts a single process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from PIL import Image
from tqdm import tqdm

from mmphi.errors import MmphiError
from mmphi.vision import store as fs
from mmphi.vision.config import EmbedConfig
from mmphi.vision.encoder import VisionEncoder

# Testing aid: seconds to sleep after each shard, so a test can kill -9 a run between shards.
SHARD_DELAY_ENV = "MMPHI_EMBED_SHARD_DELAY"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class EmbedError(MmphiError):
    """The image source cannot be read; the message says why."""


@dataclass
class Source:
    kind: str  # "folder" | "coco" | "llava"
    root: Path  # keys are relative to this folder
    keys: list[str]  # unique image keys, sorted
    records: int  # records (images / captions entries / conversations) that reference an image


def _folder_source(folder: Path) -> Source:
    # Every regular file counts, not only known extensions: a stray non-image is reported, not hidden.
    keys = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not keys:
        raise EmbedError(f"the image folder {folder} is empty")
    return Source("folder", folder, keys, len(keys))


def read_source(images: str | Path, image_root: str | Path | None = None) -> Source:
    """Resolve SRC to its image root and the unique image keys it references."""
    path = Path(images)
    if path.is_dir():
        return _folder_source(path)
    if not path.is_file():
        raise EmbedError(f"images: {path} is neither an image folder nor a COCO / LLaVA JSON file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EmbedError(f"{path} is not valid JSON: {err}") from err
    names: list[Any]  # JSON values, checked below
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        kind, names = "coco", [im.get("file_name") for im in data["images"] if isinstance(im, dict)]
    elif isinstance(data, list):
        # Text-only LLaVA records have no "image" field; they need no features.
        kind, names = "llava", [r.get("image") for r in data if isinstance(r, dict) and r.get("image")]
    else:
        raise EmbedError(f"{path} is neither COCO captions (an object with an 'images' list) nor LLaVA-Instruct "
                         "(a list of records with an 'image' field)")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise EmbedError(f"{path}: {len(bad)} {kind} records have no usable image file name (e.g. {bad[0]!r})")
    if not names:
        raise EmbedError(f"{path} references no images")
    root = Path(image_root) if image_root else path.parent / "images"
    if not root.is_dir():
        raise EmbedError(f"image root {root} is not a folder; pass --image-root (the folder the "
                         f"{'file_name' if kind == 'coco' else 'image'} fields are relative to)")
    return Source(kind, root, sorted(set(names)), len(names))


def load_image(path: Path) -> Image.Image | str:
    """The decoded RGB image, or the reason it cannot be used."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated files fail here, not inside the processor
            return im.convert("RGB")
    except FileNotFoundError:
        return "file not found"
    except Image.UnidentifiedImageError:
        return "not an image (PIL cannot identify the file format)"
    except Exception as err:  # noqa: BLE001 - any decoder failure of one file must not stop the run
        return f"unreadable image ({type(err).__name__}: {err})"


@dataclass
class Batch:
    keys: list[str]  # images that made it into pixels, in row order
    pixels: torch.Tensor | None  # (b, 3, H, W), None if every file of the batch was skipped
    skipped: list[dict]  # {"key", "path", "reason"}
    size: int  # files looked at


def prepare_batch(encoder: VisionEncoder, root: Path, keys: list[str]) -> Batch:
    """Decode and preprocess one batch (runs in a loader thread); bad files become reasons, not errors."""
    loaded = [(k, load_image(root / k)) for k in keys]
    good = [(k, im) for k, im in loaded if isinstance(im, Image.Image)]
    skipped = [{"key": k, "path": str(root / k), "reason": r} for k, r in loaded if isinstance(r, str)]
    try:
        pixels = encoder.preprocess([im for _, im in good]) if good else None
    except Exception:  # noqa: BLE001 - find the image the processor cannot take, keep the others
        rows = []
        for k, im in list(good):
            try:
                rows.append(encoder.preprocess([im]))
            except Exception as err:  # noqa: BLE001
                good.remove((k, im))
                skipped.append({"key": k, "path": str(root / k),
                                "reason": f"image processor failed ({type(err).__name__}: {err})"})
        pixels = torch.cat(rows) if rows else None
    return Batch([k for k, _ in good], pixels, skipped, len(keys))


def _batches(encoder: VisionEncoder, root: Path, keys: list[str], size: int,
             pool: ThreadPoolExecutor | None, depth: int) -> Iterator[Batch]:
    """Prepared batches in order; with a pool, up to ``depth`` batches are decoded while the encoder runs."""
    chunks = [keys[i:i + size] for i in range(0, len(keys), size)]
    if pool is None:
        yield from (prepare_batch(encoder, root, c) for c in chunks)
        return
    ahead: deque[Future] = deque()
    for chunk in chunks:
        ahead.append(pool.submit(prepare_batch, encoder, root, chunk))
        if len(ahead) > depth:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def encode_shard(encoder: VisionEncoder, source: Source, keys: list[str], batch_size: int,
                 pool: ThreadPoolExecutor | None = None, depth: int = 2, bar: tqdm | None = None
                 ) -> tuple[torch.Tensor, list[str], list[dict]]:
    """(features (n, T, D), keys of the rows, skipped files with reasons) for one shard's keys.

    With a thread ``pool``, up to ``depth`` batches are decoded and preprocessed ahead of the encoder.
    """
    feats: list[torch.Tensor] = []
    kept: list[str] = []
    skipped: list[dict] = []
    for batch in _batches(encoder, source.root, keys, batch_size, pool, depth):
        skipped += batch.skipped
        if batch.pixels is not None:
            feats.append(encoder(batch.pixels).cpu())  # (b, T, D)
            kept += batch.keys
        if bar is not None:
            bar.update(batch.size)
    empty = torch.empty(0, encoder.num_tokens, encoder.feature_dim)
    return (torch.cat(feats) if feats else empty), kept, skipped


def plan_shards(keys: list[str], shard_size: int, first: int) -> list[tuple[str, list[str]]]:
    """[(shard file name, its keys)]: a pure function of its inputs, so all processes agree."""
    return [(fs.shard_name(first + i), keys[s:s + shard_size]) for i, s in enumerate(range(0, len(keys), shard_size))]


def _check_key_clash(out: Path, source: Source, present: dict[str, str | None]) -> None:
    """Refuse to treat a same-named file from another folder as already embedded (e.g. val/ vs test/)."""
    root = str(source.root.resolve())
    clash = [k for k in source.keys if k in present and present[k] not in (root, None)]
    if clash:
        raise fs.FeatureStoreError(
            f"{len(clash)} images of {source.root} (e.g. {clash[0]!r}) have the same key as images embedded into "
            f"{out} from {present[clash[0]]}; keys are file names relative to the image folder, so the store "
            "cannot tell them apart. Embed each image folder into its own --out store.")


def _load_encoder(cfg: EmbedConfig, state: PartialState) -> VisionEncoder:
    device = state.device if cfg.device == "auto" else torch.device(cfg.device)
    dtype = DTYPES.get(cfg.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
    return VisionEncoder.from_pretrained(cfg.vision, mode=cfg.mode, layer=cfg.layer, device=device, dtype=dtype)


def embed(cfg: EmbedConfig) -> dict:
    """Embed every image SRC references into the store ``cfg.out``; returns (and stores) the summary."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    # PartialState only sets up multi-process CPU (gloo) when told cpu=True; without it, processes started
    # by `accelerate launch --multi_gpu` / torchrun on a machine without CUDA would each think they are alone.
    state = PartialState(cpu=cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()))
    source = read_source(cfg.images, cfg.image_root)
    encoder = _load_encoder(cfg, state)
    identity, out = encoder.identity(), Path(cfg.out)
    manifest = fs.read_manifest(out)
    if manifest is not None:
        fs.check_identity(out, manifest["identity"], identity, action="appended to")
    present = fs.key_roots(out)  # earlier runs' complete shards; earlier skips are retried
    _check_key_clash(out, source, present)
    todo = [k for k in source.keys if k not in present]
    plan = plan_shards(todo, cfg.shard_size, fs.next_shard_number(out))
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            fs.write_json(out / "store.json", {"format": fs.FORMAT, "version": fs.VERSION, "identity": identity})
        fs.remove_partial_shards(out)
    state.wait_for_everyone()  # every process has planned from the same state before anyone writes

    t0 = time.perf_counter()
    mine = plan[state.process_index::state.num_processes]
    delay = float(os.environ.get(SHARD_DELAY_ENV, "0") or 0)
    bar = tqdm(total=sum(len(k) for _, k in mine), desc=f"embed [{state.process_index}]", unit="img",
               position=state.process_index, disable=None, mininterval=0.5)
    pool = ThreadPoolExecutor(cfg.loader_threads) if cfg.loader_threads else None
    try:
        for name, keys in mine:
            feats, kept, skipped = encode_shard(encoder, source, keys, cfg.batch_size, pool, cfg.loader_threads, bar)
            fs.write_shard(out, name, feats, kept, skipped,
                           extra={"root": str(source.root.resolve()), "process": str(state.process_index)})
            if delay:
                time.sleep(delay)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    return _finalize(cfg, source, out, identity, plan, len(source.keys) - len(todo),
                     time.perf_counter() - t0, time.perf_counter() - start)


def _finalize(cfg: EmbedConfig, source: Source, out: Path, identity: dict, plan: list,
              already: int, seconds: float, total_seconds: float) -> dict:
    """Main process: index over all shards, report of skipped files, summary in store.json."""
    written = [fs.read_shard_meta(out, name) for name, _ in plan]
    encoded = sum(len(m["keys"]) for m in written)
    skipped_now = [s for m in written for s in m["skipped"]]
    _, index, skipped_all = fs.write_index(out)
    report = [skipped_all[k] for k in sorted(skipped_all)]
    fs.write_json(out / "report.json", {"store": str(out), "skipped": report, "count": len(report)})
    summary = {
        "store": str(out), "images_source": cfg.images, "source_format": source.kind,
        "image_root": str(source.root), "records": source.records, "images": len(source.keys),
        "encoded": encoded, "skipped": len(skipped_now), "already_in_store": already,
        "shards_written": len(plan), "store_images": len(index),
        "num_tokens": identity["num_tokens"], "feature_dim": identity["feature_dim"],
        "encoder": identity["encoder"], "mode": identity["mode"], "layer": identity["layer"],
        "seconds": round(seconds, 2), "images_per_s": round((encoded + len(skipped_now)) / max(seconds, 1e-9), 1),
        "total_seconds": round(total_seconds, 2),
    }
    fs.write_json(out / "store.json", {"format": fs.FORMAT, "version": fs.VERSION, "identity": identity,
                                       "summary": summary})
    line = (f"embed: {encoded} images encoded, {already} already in the store, {len(skipped_now)} skipped; "
            f"{summary['images_per_s']} images/s; store {out} now holds {len(index)} images")
    if report:
        shown = "; ".join(f"{s['key']}: {s['reason']}" for s in report[:3])
        line += f"\n  skipped ({len(report)}, all in {out / 'report.json'}): {shown}{' ...' if len(report) > 3 else ''}"
    print(line, file=sys.stderr)
    return summary
