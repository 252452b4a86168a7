"""``mmphi clip``: train the tiny recipe's own CLIP (vision + text towers) on image/caption pairs.

No pretrained CLIP is available offline, so the ``tiny`` recipe trains a small ``CLIPModel`` on
the shapes world with the symmetric contrastive loss, through the shared ``fit()``. The text
tower reads Phi-2's BPE ids (``<|endoftext|>`` closes every caption and is where CLIP pools).
``final/`` loads with ``CLIPModel.from_pretrained`` and holds its image processor and tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

from mmphi.errors import MmphiError
from mmphi.lm.model import VocabMap
from mmphi.quiet import quiet_transformers
from mmphi.tokenizer import load_tokenizer
from mmphi.train.dist import process_state
from mmphi.train.loop import fit
from mmphi.train.rundir import RunDir
from mmphi.vision.clip_config import ClipConfig
from mmphi.vision.retrieval import retrieval_accuracy, tokenize_captions

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def image_processor(size: int):
    """CLIP's preprocessing at ``size`` pixels (shapes-world images already have that size)."""
    with quiet_transformers():  # without torchvision, resolving the class announces its PIL fallback: all we need
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                  image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))


def _pairs(captions_file: Path) -> tuple[list[Path], list[list[str]]]:
    try:
        coco = json.loads(captions_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MmphiError(f"cannot read COCO captions {captions_file}: {err}") from err
    root = captions_file.parent / "images"
    caps: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        caps.setdefault(ann["image_id"], []).append(ann["caption"])
    images = [im for im in coco["images"] if im["id"] in caps]
    return [root / im["file_name"] for im in images], [caps[im["id"]] for im in images]


def load_pixels(paths: list[Path], size: int) -> torch.Tensor:
    """All images as uint8 (N, 3, size, size): small enough to keep in memory, normalised per batch."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc="load images", unit="img", leave=False, mininterval=1.0)):
        with Image.open(p) as file:
            im = file.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Exactly CLIPImageProcessor's rescale + normalise for images already at the model's size."""
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


class LiveRowsEmbedding(nn.Module):
    """The text tower's token embedding with only the rows of ``ids`` trainable.

    The tower reads Phi-2's 50k-id BPE, but a caption corpus uses a small share of it (45 ids in the
    shapes world); with every row trainable, AdamW's update of the unused rows made the tiny CLIP's
    step 1.27x slower on 2 CPU cores (``bench/clip_speed.py``). Ids outside ``ids`` read their frozen rows. ``merged()``
    writes the trained rows back into the plain ``nn.Embedding`` that is saved.
    """

    ids: torch.Tensor  # a buffer

    def __init__(self, embedding: nn.Embedding, ids: torch.Tensor):
        super().__init__()
        self.full = embedding.requires_grad_(False)
        self.map = VocabMap(ids)
        self.register_buffer("ids", ids.clone(), persistent=False)
        self.live = nn.Parameter(embedding.weight.detach()[ids].clone())  # (K, C)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        compact = self.map.targets(input_ids)
        out = F.embedding(compact.clamp(min=0), self.live)
        unseen = compact < 0
        return torch.where(unseen.unsqueeze(-1), self.full(input_ids), out) if unseen.any() else out

    @torch.no_grad()
    def merged(self) -> nn.Embedding:
        self.full.weight[self.ids] = self.live.to(self.full.weight.dtype)
        return self.full


def caption_vocab(tokenizer, caption_lists: list[list[str]], text_config) -> torch.Tensor:
    """Every id the captions tokenise to, plus EOS and padding (what ``tokenize_captions`` emits)."""
    texts = sorted({c for caps in caption_lists for c in caps})
    used = set(map(int, tokenize_captions(tokenizer, texts, text_config)[0].unique()))
    used |= {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id, text_config.eos_token_id,
                         text_config.pad_token_id) if i is not None and 0 <= i < text_config.vocab_size}
    return torch.tensor(sorted(used), dtype=torch.long)


class ClipTask:
    unit = "samples"

    def __init__(self, pixels, captions, val_pixels, val_captions, tokenizer, model_cfg, seed: int,
                 eval_batch: int, flops_per_sample: float, save_final):
        self.pixels, self.captions, self.val_pixels, self.val_captions = pixels, captions, val_pixels, val_captions
        self.tokenizer, self.cfg, self.seed, self.eval_batch = tokenizer, model_cfg, seed, eval_batch
        self.fps, self._save_final = flops_per_sample, save_final

    def _batch(self, pixels, captions, idx, rng) -> dict:
        texts = [captions[i][int(rng.integers(len(captions[i])))] for i in idx]
        ids, mask = tokenize_captions(self.tokenizer, texts, self.cfg.text_config)
        return {"pixel_values": normalise(pixels[idx]), "input_ids": ids, "attention_mask": mask}

    def batch(self, index: int, size: int, rank: int, world: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        idx = rng.choice(len(self.pixels), size=min(size * world, len(self.pixels)), replace=False)
        return self._batch(self.pixels, self.captions, idx[rank * size:(rank + 1) * size], rng)

    def loss(self, model, batch):
        n = float(len(batch["pixel_values"]))
        return model(**batch, return_loss=True).loss, {"samples": n, "flops": n * self.fps}

    def eval_batches(self):
        rng = np.random.default_rng([self.seed, 0, 1])  # its own stream: batches use [seed, index]
        n = len(self.val_pixels)
        for start in range(0, n - self.eval_batch + 1, self.eval_batch):  # full batches: the loss depends on size
            yield self._batch(self.val_pixels, self.val_captions, np.arange(start, start + self.eval_batch), rng)

    def save_final(self, model, path: Path) -> None:
        self._save_final(model, path)


def vision_geometry(cfg: CLIPConfig) -> tuple[CLIPVisionConfig, int, int]:
    """The vision tower's config, image size and patch size (pixels): square images of square patches."""
    vision = cfg.vision_config
    assert isinstance(vision, CLIPVisionConfig), "CLIPConfig makes its vision_config a CLIPVisionConfig"
    size, patch = vision.image_size, vision.patch_size
    if not isinstance(size, int) or not isinstance(patch, int):
        raise MmphiError(f"clip: the model's vision_config needs image_size and patch_size as one integer each "
                         f"(square images and patches), got {size!r} and {patch!r}")
    return vision, size, patch


def _flops_per_sample(cfg: CLIPConfig, text_len: int = 32) -> float:
    v, size, patch = vision_geometry(cfg)
    t = cfg.text_config
    v_tokens = (size // patch) ** 2 + 1

    def body(c) -> float:
        return c.num_hidden_layers * (4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size)

    return 6 * (body(v) * v_tokens + body(t) * text_len)


def train_clip(cfg: ClipConfig) -> dict:
    procs = process_state()
    run = RunDir(cfg.out).create()
    tokenizer = load_tokenizer(cfg.tokenizer)
    world = Path(cfg.data)
    train_file = world / "train" / "captions.json" if (world / "world.json").exists() else world
    val_file = Path(cfg.val_data) if cfg.val_data else (world / "val" / "captions.json"
                                                         if (world / "world.json").exists() else None)
    if val_file is None:
        raise MmphiError("clip needs validation captions: pass --val-data (or a shapes world as --data)")
    model_cfg = CLIPConfig(**cfg.model)
    _, size, _ = vision_geometry(model_cfg)
    paths, captions = _pairs(train_file)
    val_paths, val_captions = _pairs(val_file)
    pixels, val_pixels = load_pixels(paths, size), load_pixels(val_paths, size)
    torch.manual_seed(cfg.seed)
    model = CLIPModel(model_cfg)
    params = {"vision": sum(p.numel() for p in model.vision_model.parameters()),
              "text": sum(p.numel() for p in model.text_model.parameters()),
              "total": sum(p.numel() for p in model.parameters())}
    embeddings = model.text_model.embeddings
    live = LiveRowsEmbedding(embeddings.token_embedding,
                             caption_vocab(tokenizer, captions + val_captions, model_cfg.text_config))
    embeddings.token_embedding = live
    processor = image_processor(size)

    def save_final(m: CLIPModel, path: Path) -> None:
        embeddings.token_embedding = live.merged()  # a plain CLIPModel is what gets saved
        try:
            m.save_pretrained(path)
        finally:
            embeddings.token_embedding = live
        processor.save_pretrained(path)
        tokenizer.save_pretrained(path)

    task = ClipTask(pixels, captions, val_pixels, val_captions, tokenizer, model_cfg, cfg.seed, cfg.batch_size,
                    _flops_per_sample(model_cfg), save_final)
    facts = {"verb": "clip", "train_images": len(paths), "settings": vars(cfg), "live_vocab": len(live.ids),
             "params": params}
    result = {**fit(task, model, cfg, run, facts), "total_params": params["total"]}  # the live copy not twice
    if not procs.is_main_process:
        return result
    n = min(cfg.retrieval_images, len(val_paths))
    images = [Image.open(p).convert("RGB") for p in val_paths[:n]]
    final = CLIPModel.from_pretrained(run.final)
    # The canonical description (first caption) of each val image is its retrieval target.
    summary = {**result, "retrieval": retrieval_accuracy(final, processor, tokenizer, images,
                                                         [c[0] for c in val_captions[:n]])}
    r = summary["retrieval"]
    print(f"image->caption retrieval on {r['n']} val images: top-1 {r['top1'] * 100:.1f}% "
          f"(chance {r['chance'] * 100:.1f}%), top-5 {r['top5'] * 100:.1f}% (chance {r['chance_top5'] * 100:.1f}%)")
    run.plot_loss("tiny CLIP: contrastive loss")
    run.write_json("summary.json", summary)
    if cfg.bundle_into:
        summary["bundle"] = _bundle(cfg, summary, model_cfg, len(paths))
    return summary


def _bundle(cfg: ClipConfig, summary: dict, model_cfg: CLIPConfig, train_images: int) -> dict:
    """``--bundle-into``: the vision tower of this run as a bundled model (mmphi/vision/bundle.py)."""
    import os
    import platform

    from mmphi.vision.bundle import export_vision_bundle

    world = Path(cfg.data) / "world.json"
    seed = json.loads(world.read_text())["settings"]["seed"] if world.exists() else None
    _, size, patch = vision_geometry(model_cfg)
    into = Path(cfg.bundle_into)
    facts = {"name": f"mmphi/{into.name}", "world_seed": seed, "train_images": train_images,
             "steps": summary["steps"], "batch_size": cfg.batch_size,
             "minutes": round(summary["elapsed_s"] / 60, 1), "retrieval": summary["retrieval"],
             "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
             "vision_config": {"grid": size // patch},
             "commands": [f"mmphi world --seed {seed} --out W  # the tiny recipe's world",
                          f"mmphi clip --data W --out C --max-steps {cfg.max_steps} --bundle-into {cfg.bundle_into}"]}
    out = export_vision_bundle(Path(cfg.out) / "final", into, facts)
    print(f"vision tower bundled in {into} (sha256 {out['sha256'][:16]}...)")
    return out
