"""``mmphi eval``: how good is a model on a held-out split? Writes results.json, results.md and charts.

* VQA accuracy per question type: typed questions, the same questions with the image removed
  (blind baseline), and the spoken questions through speech recognition and/or through the audio
  projector (``--audio-routes``; with the typed accuracy on exactly those questions beside them);
  on a shapes world also by the number of objects in the scene;
* captions: BLEU-4 and CIDEr-D against the split's COCO references;
* ASR word error rate of the spoken questions, and its real-time factor;
* LM perplexity on the split's text corpus.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmphi.common.questions import accuracy_by_type, by_objects_if_known, position_by_naming
from mmphi.errors import MmphiError
from mmphi.eval.config import EvalConfig
from mmphi.eval.metrics import bleu4, cider, perplexity, word_error_rate
from mmphi.eval.report import write_report
from mmphi.mm.vqa import answer_questions, single_questions


class _Images:
    """Raw test images -> features through the model's own vision encoder (cached per image)."""

    def __init__(self, model, folder: Path):
        self.model, self.folder = model, folder
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, keys) -> torch.Tensor:
        todo = [k for k in dict.fromkeys(keys) if k not in self.cache]
        for i in range(0, len(todo), 64):
            chunk = todo[i:i + 64]
            images = []
            for k in chunk:
                with Image.open(self.folder / k) as im:
                    images.append(im.convert("RGB"))
            for k, f in zip(chunk, self.model.encoder.encode(images).float().cpu(), strict=True):
                self.cache[k] = f
        return torch.stack([self.cache[k] for k in keys])


def _require(split: Path, name: str) -> Path:
    path = split / name
    if not path.exists():
        raise MmphiError(f"{split} has no {name}; --data must be a split folder such as WORLD/test")
    return path


def corpus_perplexity(lm, tokenizer, corpus: Path, seq_len: int = 128, windows: int = 64) -> dict:
    from mmphi.lm.corpus import _text_docs
    from mmphi.lm.pretrain import lm_loss

    ids: list[int] = []
    for doc in _text_docs(corpus):
        ids += tokenizer(doc, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        if len(ids) > seq_len * windows + 1:
            break
    tokens = np.asarray(ids, dtype=np.int64)
    loss = lm_loss(lm, tokens, seq_len, windows)
    n = min(windows, (len(tokens) - 1) // seq_len) * seq_len
    return {"loss": loss, "perplexity": perplexity(loss * n, n), "tokens": n}


def _spoken(cfg: EvalConfig, split: Path, model, tok, enc, images, typed_by_key: dict) -> dict:
    from mmphi.audio import Transcriber

    items = json.loads((split / "speech.json").read_text())
    asr = Transcriber(cfg.asr_model or None, prompt=cfg.asr_prompt or None)
    heard, audio_s, busy_s = [], 0.0, 0.0
    for it in items:
        t = asr.transcribe(split / it["audio"])
        heard.append(t.text)
        audio_s, busy_s = audio_s + t.duration_s, busy_s + t.elapsed_s
    twins = [typed_by_key.get((it["record"], it["question"])) for it in items]  # the same question, typed
    # asked with the image where its typed twin has it, so the two columns differ only by speech
    questions = [{"type": it["type"], "question": h, "answer": it["answer"], "image": it["image"],
                  "record": it["record"], "spoken": it["question"], "at_end": (twin or {}).get("at_end", False)}
                 for it, h, twin in zip(items, heard, twins, strict=True)]
    # answered the way the typed twins were (after describing when --describe-first)
    rows = answer_questions(model, tok, enc, questions, images, True, "vqa spoken", describe_first=cfg.describe_first)
    same = [twin for twin in twins if twin is not None]
    return {"spoken": accuracy_by_type(rows), "typed_same_questions": accuracy_by_type(same),
            "asr": {"wer": word_error_rate([it["question"] for it in items], heard), "n": len(items),
                    "after_describing": cfg.describe_first,
                    "audio_s": round(audio_s, 1), "real_time_factor": busy_s / max(audio_s, 1e-9),
                    "examples": [{"said": it["question"], "heard": h}
                                 for it, h in zip(items[:5], heard[:5], strict=True)]},
            "rows": rows}


class _Clips:
    """Raw test clips -> stacked speech features through the model's own speech encoder (cached per clip)."""

    def __init__(self, encoder, folder: Path):
        self.encoder, self.folder = encoder, folder
        self.cache: dict[str, torch.Tensor] = {}
        self.seconds = 0.0

    def _get(self, key: str) -> torch.Tensor:
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self.encoder.encode(self.folder / key)
            self.seconds += time.perf_counter() - start
        return self.cache[key]

    def __contains__(self, key: str) -> bool:
        return (self.folder / key).is_file()

    def tokens(self, key: str) -> int:
        return int(self._get(key).shape[0])

    def get_many(self, keys) -> tuple[torch.Tensor, torch.Tensor]:
        from mmphi.audio.store import pad_clips

        return pad_clips([self._get(k) for k in keys], self.encoder.feature_dim)


def _spoken_embed(cfg: EvalConfig, split: Path, model, tok, enc, images, typed_by_key: dict) -> dict:
    """The spoken questions through the audio projector, each where and as its typed twin was asked."""
    from mmphi.mm.speech import load_audio_encoder
    from mmphi.mm.vqa import answer_questions

    items = json.loads((split / "speech.json").read_text())
    clips = _Clips(load_audio_encoder(model.spec), split)
    twins = [typed_by_key.get((it["record"], it["question"])) for it in items]
    questions = [{"type": it["type"], "question": it["question"], "answer": it["answer"], "image": it["image"],
                  "record": it["record"], "audio_key": it["audio"], "at_end": (twin or {}).get("at_end", False)}
                 for it, twin in zip(items, twins, strict=True)]
    rows = answer_questions(model, tok, enc, questions, images, True, "vqa spoken (embeddings)",
                            describe_first=cfg.describe_first, clips=clips)
    tokens = [clips.tokens(it["audio"]) for it in items]
    return {"spoken": accuracy_by_type(rows), "typed_same_questions": accuracy_by_type([t for t in twins if t]),
            "info": {"n": len(items), "after_describing": cfg.describe_first,
                     "encoder": model.spec["audio"]["identity"].get("encoder"),
                     "tokens_per_s": model.spec["audio"]["identity"].get("tokens_per_s"),
                     "tokens_per_clip": round(sum(tokens) / max(len(tokens), 1), 1),
                     "encode_ms_per_clip": round(1000 * clips.seconds / max(len(items), 1), 1)},
            "rows": rows}


def _captions(cfg: EvalConfig, split: Path, model, tok, enc, images) -> dict:
    from mmphi.chat import CAPTION_PROMPTS
    from mmphi.mm.answer import greedy_answers

    coco = json.loads(_require(split, "captions.json").read_text())
    refs: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    chosen = [im for im in coco["images"] if im["id"] in refs][: cfg.captions]
    prompts = [enc.encode([(f"<image>\n{CAPTION_PROMPTS[0]}", None)], im["file_name"]) for im in chosen]
    got = greedy_answers(model, tok, prompts, images, max_new_tokens=48, batch_size=cfg.batch_size, desc="captions")
    cands = {im["id"]: c for im, c in zip(chosen, got, strict=True)}
    sub = {k: refs[k] for k in cands}
    return {"bleu4": bleu4(cands, sub), "cider": cider(cands, sub), "n": len(cands),
            "examples": [{"image": im["file_name"], "caption": cands[im["id"]], "reference": refs[im["id"]][0]}
                         for im in chosen[:3]]}


def _examples(rows: list[dict], split: Path, out: Path, n: int) -> list[dict]:
    """A few typed questions (alternating right and wrong when possible) with their images copied."""
    right = [r for r in rows if r["correct"]]
    wrong = [r for r in rows if not r["correct"]]
    picked = [r for pair in zip(right, wrong, strict=False) for r in pair][:n]
    picked += [r for r in right + wrong if r not in picked][: n - len(picked)]
    (out / "examples").mkdir(parents=True, exist_ok=True)
    for r in picked:
        shutil.copy(split / "images" / r["image"], out / "examples" / r["image"])
    return [{k: r[k] for k in ("image", "type", "question", "prediction", "answer", "correct")} for r in picked]


def evaluate(cfg: EvalConfig) -> dict:
    if cfg.benchmark:
        from mmphi.eval.benchmarks.run import run_benchmark

        return run_benchmark(cfg)
    split, out = Path(cfg.data), Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results: dict = {"model": cfg.model, "data": cfg.data}
    if not (Path(cfg.model) / "mmphi.json").exists():
        return _text_only(cfg, split, out, results)
    from mmphi.mm.data import ChatEncoder
    from mmphi.mm.loading import load_multimodal

    model, tok = load_multimodal(cfg.model)
    if model.encoder is None:
        raise MmphiError(f"{cfg.model} records no vision encoder, so it cannot read the test images")
    enc = ChatEncoder(tok, model.image_tokens, model.spec.get("system", ""), 4096)
    images = _Images(model, split / "images")
    items = single_questions(_require(split, "instruct.json"), cfg.limit)
    typed = answer_questions(model, tok, enc, items, images, True, "vqa typed")
    blind = answer_questions(model, tok, enc, items, images, False, "vqa blind")
    results["vqa"] = {"typed": accuracy_by_type(typed), "blind": accuracy_by_type(blind)}
    described: list[dict] = []
    if cfg.describe_first:
        described = answer_questions(model, tok, enc, items, images, True, "vqa after describing", describe_first=True)
        results["vqa"]["typed, after describing"] = accuracy_by_type(described)
    by_objects = by_objects_if_known(typed, split)  # a shapes world's ground truth says how many objects
    if by_objects:
        results["vqa_by_objects"] = by_objects
        results["position_by_naming"] = {"condition": "typed, after describing" if described else "typed",
                                         "by_objects": position_by_naming(described or typed, split / "scenes.json")}
    if cfg.spoken and (split / "speech.json").exists():
        twins = {(r["record"], r["question"]): r for r in (described if cfg.describe_first else typed)}
        if "asr" in cfg.audio_routes:
            spoken = _spoken(cfg, split, model, tok, enc, images, twins)
            results["vqa"]["spoken"] = spoken["spoken"]
            results["vqa"]["typed (same questions as spoken)"] = spoken["typed_same_questions"]
            results["asr"] = spoken["asr"]
        if "embed" in cfg.audio_routes:
            embedded = _spoken_embed(cfg, split, model, tok, enc, images, twins)
            results["vqa"]["spoken (embeddings)"] = embedded["spoken"]
            results["vqa"]["typed (same questions as spoken)"] = embedded["typed_same_questions"]
            results["speech_embed"] = embedded["info"]
    if cfg.captions:
        results["captions"] = _captions(cfg, split, model, tok, enc, images)
    if (split / "corpus.txt").exists():
        results["perplexity"] = corpus_perplexity(model.lm, tok, split / "corpus.txt")
    results["examples"] = _examples(typed, split, out, cfg.examples)
    results["elapsed_s"] = round(time.perf_counter() - start, 1)
    write_report(results, out)
    return results


def _text_only(cfg: EvalConfig, split: Path, out: Path, results: dict) -> dict:
    """A plain LM: perplexity, and questions answered from the scene described in words."""
    from transformers import AutoModelForCausalLM

    from mmphi.bundled import resolve_model
    from mmphi.lm.textqa import text_qa_accuracy
    from mmphi.tokenizer import load_tokenizer

    lm = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model))
    tok = load_tokenizer(cfg.model)
    if (split / "corpus.txt").exists():
        results["perplexity"] = corpus_perplexity(lm, tok, split / "corpus.txt")
    if (split / "instruct.json").exists():
        results["text_qa"] = text_qa_accuracy(lm, tok, split, cfg.limit or 10**9)
    write_report(results, out)
    return results
