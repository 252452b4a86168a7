"""Stand-ins for what the phi2 journey downloads, made offline: real shapes and layouts, random content.

* ``make_phi2``: a ``PhiForCausalLM`` with microsoft/phi-2's exact config (width 2560, 32 heads, rotary partial
  factor 0.4, intermediate 10240, vocabulary 51200, no pad token, tied embeddings off) but 1-2 layers, saved the
  way the hub repo is: fp16 safetensors in shards with an index, and Phi-2's tokenizer ids (the offline GPT-2
  BPE of ``mmphi.tokenizer``; like Phi-2's ``tokenizer_config.json`` it names no pad token).
* ``make_clip``: a ``CLIPModel`` with openai/clip-vit-base-patch32's or openai/clip-vit-large-patch14-336's
  exact vision shape (width, heads, patch, image size: 50 or 577 tokens with CLS) but fewer layers, with the
  hub repos' legacy ``preprocessor_config.json`` (``CLIPFeatureExtractor``, integer ``size`` / ``crop_size``).
* ``make_coco``: ``annotations/captions_{train,val}2017.json`` with every key of the official files (info,
  licenses, images with id/file_name/height/width/coco_url/flickr_url/date_captured/license, annotations with
  id/image_id/caption; ids sparse, captions with the stray spaces and newlines real ones have) and small JPEGs
  in ``train2017/`` / ``val2017/`` (some greyscale, as in COCO).
* ``make_llava``: ``llava_instruct_150k.json`` records (``id``, ``image``, multi-turn ``conversations``,
  ``<image>`` first or last in the first human turn, long answers) and records without an ``image`` key.
* ``make_redpajama``: RedPajama-style JSONL (``text``, ``meta`` as an object or a JSON string,
  ``red_pajama_subset``), with non-ASCII text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

PHI2_CONFIG: dict[str, Any] = {  # microsoft/phi-2's config.json (num_hidden_layers aside)
    "architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 50256, "embd_pdrop": 0.0,
    "eos_token_id": 50256, "hidden_act": "gelu_new", "hidden_size": 2560, "initializer_range": 0.02,
    "intermediate_size": 10240, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "phi",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "partial_rotary_factor": 0.4,
    "qk_layernorm": False, "resid_pdrop": 0.1, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "vocab_size": 51200,
}
CLIP_VISION = {  # the hub configs' vision towers; num_hidden_layers is cut by make_clip
    "openai/clip-vit-base-patch32": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                                     "num_hidden_layers": 12, "patch_size": 32, "image_size": 224,
                                     "projection_dim": 512, "text_hidden": 512},
    "openai/clip-vit-large-patch14-336": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                                          "num_hidden_layers": 24, "patch_size": 14, "image_size": 336,
                                          "projection_dim": 768, "text_hidden": 768},
}
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_VOCABULARY = ("a man woman dog cat bus train table plate pizza street red white blue green small large old young "
         "sitting standing riding holding next to on top of in front the with near two three people field kitchen "
         "clock tower bicycle sign water beach boat sky building window tree grass road car truck")
WORDS = _VOCABULARY.split()
COLOURS = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (230, 200, 40), (120, 120, 120), (250, 250, 250)]


def checkpoint_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


@torch.no_grad()
def make_phi2(out: Path, layers: int = 2, seed: int = 0) -> Path:
    """Random microsoft/phi-2 of ``layers`` layers in ``out`` (fp16 shards + index, tokenizer without pad)."""
    from transformers import PhiConfig, PhiForCausalLM

    from mmphi.tokenizer import build_offline_tokenizer

    torch.manual_seed(seed)
    fields = {k: v for k, v in PHI2_CONFIG.items() if k not in ("architectures", "model_type")}
    config = PhiConfig(**{**fields, "num_hidden_layers": layers})
    model = PhiForCausalLM(config).to(torch.float16)  # the hub checkpoint is fp16 ("torch_dtype": "float16")
    model.save_pretrained(out, max_shard_size="500MB")  # several shards + model.safetensors.index.json, as on the hub
    # The hub's files as they are, written before transformers 5: rotary settings at the top level, torch_dtype,
    # a CodeGenTokenizer config without a pad token (mmphi must fall back to EOS and keep real EOS as labels).
    (out / "config.json").write_text(json.dumps({"_name_or_path": "microsoft/phi-2", **PHI2_CONFIG,
                                                 "num_hidden_layers": layers, "rope_scaling": None,
                                                 "torch_dtype": "float16", "transformers_version": "4.37.0",
                                                 "use_cache": True}, indent=2))
    build_offline_tokenizer().save_pretrained(out)
    cfg_file = out / "tokenizer_config.json"
    tc = {k: v for k, v in json.loads(cfg_file.read_text()).items() if k not in ("pad_token", "backend")}
    tc.update({"tokenizer_class": "CodeGenTokenizer", "add_bos_token": False, "add_prefix_space": False,
               "errors": "replace"})
    cfg_file.write_text(json.dumps(tc, indent=2))
    return out


@torch.no_grad()
def make_clip(out: Path, name: str, layers: int = 2, seed: int = 0) -> Path:
    """Random CLIPModel with ``name``'s vision shape (``layers`` layers) and its legacy preprocessor config."""
    from transformers import CLIPConfig, CLIPModel

    v = CLIP_VISION[name]
    torch.manual_seed(seed)
    th = v["text_hidden"]
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": th, "intermediate_size": 4 * th, "num_hidden_layers": 1,
                     "num_attention_heads": th // 64, "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
        vision_config={"hidden_size": v["hidden_size"], "intermediate_size": v["intermediate_size"],
                       "num_attention_heads": v["num_attention_heads"], "num_hidden_layers": layers,
                       "patch_size": v["patch_size"], "image_size": v["image_size"], "hidden_act": "quick_gelu",
                       "projection_dim": v["projection_dim"]},
        projection_dim=v["projection_dim"])
    CLIPModel(config).save_pretrained(out)
    size = v["image_size"]
    (out / "preprocessor_config.json").write_text(json.dumps({  # the hub file, in its pre-ImageProcessor form
        "crop_size": size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD,
        "resample": 3, "size": size}, indent=2))
    return out


def _sentence(rng: random.Random, lo: int = 6, hi: int = 14) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def _jpeg(path: Path, rng: random.Random, grey: bool) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    w, h = rng.choice([(64, 48), (96, 72), (80, 120), (128, 96), (150, 100)])
    im = Image.new("RGB", (w, h), rng.choice(COLOURS))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 3)):
        x, y = rng.randrange(w - 20), rng.randrange(h - 20)
        box = (x, y, x + rng.randint(8, 20), y + rng.randint(8, 20))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=rng.choice(COLOURS))
    path.parent.mkdir(parents=True, exist_ok=True)
    (im.convert("L") if grey else im).save(path, "JPEG", quality=85)
    return w, h


def make_coco(root: Path, train_images: int = 32, val_images: int = 6, seed: int = 0) -> dict[str, Any]:
    """COCO 2017 captions layout under ``root``; returns {split: [file names]}."""
    rng = random.Random(seed)
    names: dict[str, Any] = {}
    next_ann = 37  # real annotation ids start at 37 and are sparse
    for split, count, first_id in (("train2017", train_images, 9), ("val2017", val_images, 139)):
        images, anns = [], []
        for k in range(count):
            image_id = first_id + 7919 * k  # sparse ids, as in COCO
            file_name = f"{image_id:012d}.jpg"
            w, h = _jpeg(root / split / file_name, rng, grey=k % 9 == 4)
            images.append({"license": rng.randint(1, 8), "file_name": file_name,
                           "coco_url": f"http://images.cocodataset.org/{split}/{file_name}", "height": h, "width": w,
                           "date_captured": "2013-11-14 11:18:45",
                           "flickr_url": f"http://farm4.staticflickr.com/{image_id}.jpg", "id": image_id})
            for _ in range(5):  # five captions per image
                caption = _sentence(rng)
                if rng.random() < 0.15:
                    caption = caption.lower() + rng.choice([" ", "\n", "  "])  # as some real ones are
                anns.append({"image_id": image_id, "id": next_ann, "caption": caption})
                next_ann += rng.randint(1, 40)
        rng.shuffle(anns)  # the official file is not grouped by image
        coco = {"info": {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0",
                         "year": 2017, "contributor": "COCO Consortium", "date_created": "2017/09/01"},
                "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": i,
                              "name": "Attribution-NonCommercial-ShareAlike License"} for i in range(1, 9)],
                "images": images, "annotations": anns}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(coco))
        names[split] = [im["file_name"] for im in images]
    return names


QUESTIONS = ["What is the man doing in the image?", "What colour is the bus?", "How many people are there?",
             "What is on the table?", "Where is the dog sitting?", "What can you see in the background?"]


def make_llava(path: Path, images: list[str], text_only: int = 4, seed: int = 0) -> list[dict]:
    """LLaVA-Instruct-150K records for ``images`` (file names relative to COCO train2017), plus text-only ones."""
    rng = random.Random(seed)
    records = []
    for k, image in enumerate(images):
        rounds = rng.choice([1, 2, 3, 4])
        conv = []
        for r in range(rounds):
            q = rng.choice(QUESTIONS)
            if r == 0:  # the placeholder is first or last in the first human turn, as in the real file
                q = f"<image>\n{q}" if k % 2 else f"{q}\n<image>"
            long = k % 5 == 0 and r == 0  # "detailed description" records have long answers
            a = " ".join(_sentence(rng) for _ in range(rng.randint(6, 10) if long else rng.randint(1, 2)))
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        records.append({"id": image.removesuffix(".jpg"), "image": image, "conversations": conv})
    for k in range(text_only):  # no "image" key at all (as in LLaVA's text-only ShareGPT records)
        conv = []
        for _ in range(rng.randint(1, 2)):
            conv += [{"from": "human", "value": f"Write one sentence about a {rng.choice(WORDS)}."},
                     {"from": "gpt", "value": _sentence(rng)}]
        records.append({"id": f"text-{k:04d}", "conversations": conv})
    rng.shuffle(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    return records


def make_redpajama(path: Path, docs: int = 120, seed: int = 0) -> Path:
    """RedPajama-style JSONL: {"text", "meta", "red_pajama_subset"}, meta an object or (HF sample) a JSON string."""
    rng = random.Random(seed)
    extra = ["Café crème à 3 €.", "東京は大きい。", "Größe: 12 µm — naïve façade.", "🙂 done."]
    with open(path, "w", encoding="utf-8") as f:
        for k in range(docs):
            paragraphs = ["\n".join(_sentence(rng, 8, 20) for _ in range(rng.randint(2, 6)))
                          for _ in range(rng.randint(1, 3))]
            if k % 7 == 0:
                paragraphs.append(rng.choice(extra))
            meta: Any = {"timestamp": "2019-04-25T12:57:54", "url": f"https://example.org/{k}", "language": "en",
                         "source": "cc"}
            if k % 2:
                meta = json.dumps(meta)
            f.write(json.dumps({"text": "\n\n".join(paragraphs), "meta": meta,
                                "red_pajama_subset": rng.choice(["common_crawl", "c4", "wikipedia", "arxiv"])},
                               ensure_ascii=k % 3 == 0) + "\n")
    return path
