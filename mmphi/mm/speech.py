"""Speech as a native input: the audio projector's stages (``mmphi speech-align``, ``mmphi speech-finetune``).

They reuse the vision stages' pieces (``fit()``, ``ConversationTask``, ``ChatEncoder``, the projector
kinds) and add one thing to a finished multimodal model: an audio projector from stacked Whisper
encoder features (``mmphi.audio.features``) to LM embeddings, spliced at an ``<audio>`` placeholder
as image features are at ``<image>``.

- **speech-align** (stage 1): the model is frozen, adapters and all; only the new audio projector
  trains, on (spoken clip -> the words it says): the world's spoken train questions and captions,
  asked "Repeat what was said." as stage 1 asks for a caption.
- **speech-finetune** (stage 2): the LoRA adapters (from the model's own stage 2) and the audio
  projector train on the world's train conversations with one question of each spoken record
  replaced by its clip, mixed with typed conversations (``--typed-per-spoken``), so one adapter
  answers typed, transcribed and spoken-as-embeddings questions. The image projector stays as it was.

The model folder gains ``audio_projector.safetensors`` and an ``audio`` entry in ``mmphi.json``:
the projector's spec and the speech encoder's identity and source (empty = the bundled tiny.en).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from mmphi.chat import AUDIO, IMAGE
from mmphi.common.questions import accuracy_by_type
from mmphi.mm.data import ChatEncoder, DataError, ExampleSet, llava_examples
from mmphi.mm.model import ModelLoadError, MultimodalLM, base_lm, load_projector, read_spec, resolve
from mmphi.mm.projector import build_projector
from mmphi.mm.speech_config import SpeechAlignConfig, SpeechFinetuneConfig
from mmphi.mm.task import ConversationTask, flops_per_token, open_store
from mmphi.train.loop import fit
from mmphi.train.rundir import RunDir

TRANSCRIBE = "Repeat what was said."  # stage 1's question about a clip


# ---------------------------------------------------------------------- the projector and encoder of a folder
def build_audio_projector(p: dict) -> nn.Module:
    return build_projector(p["kind"], p["in_dim"], p["out_dim"], 0, p.get("hidden", 0))


def load_audio_projector(path: str | Path, spec: dict) -> nn.Module:
    projector = build_audio_projector(spec["audio"]["projector"])
    weights = Path(path) / "audio_projector.safetensors"
    try:
        projector.load_state_dict(load_file(weights))
    except Exception as err:
        raise ModelLoadError(f"cannot load the audio projector {weights}: {err}") from err
    return projector


def load_audio_encoder(spec: dict, max_seconds: float = 600.0):
    """The speech encoder recorded in the spec, checked against the features the audio projector learnt."""
    from mmphi.audio.features import AudioEncoder
    from mmphi.vision.store import identity_mismatch

    audio = spec.get("audio")
    if not audio:
        raise ModelLoadError("this model has no audio projector: speech can only reach it as a transcript "
                             "(--audio-route asr); give it one with `mmphi speech-align` and `speech-finetune`")
    ident = audio["identity"]
    encoder = AudioEncoder(audio.get("source") or None, stack=ident["stack"], max_seconds=max_seconds,
                           vad=ident.get("vad", True))
    wrong = identity_mismatch(ident, encoder.identity())
    if wrong:
        raise ModelLoadError(f"the speech encoder {encoder.model_name} gives different features ({', '.join(wrong)}) "
                             "from those the audio projector was trained on")
    return encoder


# ---------------------------------------------------------------------- data
def speech_items(world: Path, split: str) -> list[dict]:
    """A split's speech.json, each item with its feature-store ``key`` (``split/speech/....wav``)."""
    listing = world / split / "speech.json"
    if not listing.exists():
        raise DataError(f"{world / split} has no speech.json; make the clips with `mmphi world --speech-train N "
                        "--speech-captions N --speech-val N`")
    return [{**it, "key": f"{split}/{it['audio']}"} for it in json.loads(listing.read_text())]


def transcript_examples(items: Sequence[dict], enc: ChatEncoder, clips) -> ExampleSet:
    """Stage 1: each clip -> the words it says."""
    out = ExampleSet()
    for it in items:
        text = it["caption"] if it.get("kind") == "caption" else it["question"]
        ex = enc.encode([(f"{AUDIO}\n{TRANSCRIBE}", text)], None, f"said-{it['key']}", (), it["key"],
                        clips.tokens(it["key"]))
        if ex is not None:
            out.add(ex)
    return out.freeze()


def spoken_examples(items: Sequence[dict], instruct: Path, enc: ChatEncoder, clips) -> ExampleSet:
    """Stage 2: each spoken question's own conversation, that question's turn replaced by its clip."""
    records = {r["id"]: r for r in json.loads(Path(instruct).read_text())}
    out = ExampleSet()
    for it in items:
        if it.get("kind") == "caption" or "turn" not in it:
            continue
        rec = records[it["record"]]
        conv = [dict(t) for t in rec["conversations"]]
        human = conv[2 * it["turn"]]
        had_image = IMAGE in human["value"]
        spoken = AUDIO if not had_image else (f"{AUDIO}\n{IMAGE}" if human["value"].strip().endswith(IMAGE)
                                              else f"{IMAGE}\n{AUDIO}")
        human["value"] = spoken
        rounds = [(conv[k]["value"].strip(), conv[k + 1]["value"].strip()) for k in range(0, len(conv), 2)]
        if IMAGE not in rounds[0][0]:
            rounds[0] = (f"{IMAGE}\n{rounds[0][0]}", rounds[0][1])
        ex = enc.encode(rounds, rec["image"], f"spoken-{it['key']}", rec.get("types", ()), it["key"],
                        clips.tokens(it["key"]))
        if ex is not None and ex.audio is not None:
            out.add(ex)
    return out.freeze()


def spoken_vqa(model, tokenizer, enc: ChatEncoder, items: Sequence[dict], images, clips,
               describe_first: bool = False, desc: str = "spoken") -> tuple[list[dict], list[dict]]:
    """(rows through the embeddings, rows of the same questions typed) for spoken question ``items``."""
    from mmphi.mm.vqa import answer_questions

    questions = [{"type": it["type"], "question": it["question"], "answer": it["answer"], "image": it["image"],
                  "record": it["record"], "audio_key": it["key"]} for it in items if it.get("kind") != "caption"]
    spoken = answer_questions(model, tokenizer, enc, questions, images, True, f"{desc} (embeddings)",
                              describe_first=describe_first, clips=clips)
    typed = answer_questions(model, tokenizer, enc, [{k: v for k, v in q.items() if k != "audio_key"}
                                                     for q in questions], images, True, f"{desc} (typed)",
                             describe_first=describe_first)
    return spoken, typed


def _val_vqa(cfg, model, tokenizer, enc: ChatEncoder, clips) -> dict | None:
    if not cfg.val_limit or not cfg.features:
        return None
    items = [it for it in speech_items(Path(cfg.data), "val") if it.get("kind") != "caption"][: cfg.val_limit]
    store = open_store(cfg.features)
    spoken, typed = spoken_vqa(model, tokenizer, enc, items, store.get_many, clips, desc="val")
    res = {"spoken_embeddings": accuracy_by_type(spoken), "typed_same_questions": accuracy_by_type(typed)}
    print(f"val VQA of {len(spoken)} spoken questions: through the embeddings "
          f"{res['spoken_embeddings']['overall']['accuracy'] * 100:.1f}%, typed "
          f"{res['typed_same_questions']['overall']['accuracy'] * 100:.1f}%")
    return res


# ---------------------------------------------------------------------- stages
def _sources(init: str, spec: dict) -> tuple[str, str | None]:
    vision = resolve(init, spec["vision"]["source"]) if "source" in spec.get("vision", {}) else None
    return resolve(init, spec["lm"]), vision


def speech_align(cfg: SpeechAlignConfig) -> dict:
    from mmphi.audio.store import AudioFeatureStore
    from mmphi.mm.loading import load_multimodal

    run = RunDir(cfg.out).create()
    clips = AudioFeatureStore.open(cfg.audio_features)
    model, tokenizer = load_multimodal(cfg.init)  # frozen, in eval mode, as trained (4-bit after QLoRA)
    spec = dict(model.spec)
    lm_source, vision = _sources(cfg.init, spec)
    enc = ChatEncoder(tokenizer, model.image_tokens, spec.get("system", ""), cfg.max_len)
    world = Path(cfg.data)
    train = transcript_examples(speech_items(world, "train"), enc, clips)
    val = transcript_examples(speech_items(world, "val"), enc, clips) if (world / "val" / "speech.json").exists() \
        else []
    if not train:
        raise DataError(f"no spoken train clip of {world} fits --max-len {cfg.max_len}")
    out_dim = int(base_lm(model.lm).config.hidden_size)
    p = {"kind": cfg.projector, "in_dim": clips.feature_dim, "out_dim": out_dim, "hidden": cfg.projector_hidden}
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    model.audio_projector = build_audio_projector(p).to(device)
    model.spec = {**spec, "audio": {"projector": p, "identity": clips.identity, "source": cfg.encoder},
                  "stage": "speech-align"}

    def save_final(m: MultimodalLM, path: Path) -> None:
        m.save_pretrained(path, tokenizer, lm_source, vision)

    task = ConversationTask(train, val, None, enc.pad_id, cfg.seed, cfg.batch_size,  # type: ignore[arg-type]
                            flops_per_token(model.lm, trainable_body=False), save_final, group_by="length",
                            audio_store=clips)
    facts = {"verb": "speech-align", "train_examples": len(train), "settings": vars(cfg)}
    return _fit_and_report(task, model, cfg, run, facts, (tokenizer, enc, clips),
                           "speech stage 1: audio projector alignment (model frozen)")


def _trainable_lm(init: str, spec: dict, quantize: bool):
    """The LM with the model's own LoRA adapters, trainable (QLoRA's preparation when 4-bit)."""
    from peft import PeftModel, prepare_model_for_kbit_training

    from mmphi.lm.loading import load_causal_lm

    lm = load_causal_lm(resolve(init, spec["lm"]), quantize)
    if quantize:
        lm = prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)
    if not spec.get("adapters"):
        raise ModelLoadError(f"{init} has no LoRA adapters to go on training (give speech-finetune a stage-2 model, "
                             "not a merged one)")
    return PeftModel.from_pretrained(lm, str(Path(init) / spec["adapters"]), is_trainable=True)


def speech_finetune(cfg: SpeechFinetuneConfig) -> dict:
    from mmphi.audio.store import AudioFeatureStore
    from mmphi.tokenizer import load_tokenizer

    run = RunDir(cfg.out).create()
    spec = read_spec(cfg.init)
    if not spec.get("audio"):
        raise ModelLoadError(f"{cfg.init} has no audio projector: run `mmphi speech-align` first and give its final/")
    tokenizer = load_tokenizer(cfg.init)
    clips = AudioFeatureStore.open(cfg.audio_features)
    store = open_store(cfg.features)
    enc = ChatEncoder(tokenizer, spec["image_tokens"], spec.get("system", ""), cfg.max_len)
    world = Path(cfg.data)
    spoken = spoken_examples(speech_items(world, "train"), world / "train" / "instruct.json", enc, clips)
    if not spoken:
        raise DataError(f"{world}/train/speech.json has no spoken questions (--speech-train) that fit --max-len")
    typed, _ = llava_examples(world / "train" / "instruct.json", enc)
    rng = np.random.default_rng(cfg.seed)
    n_typed = min(len(typed), round(cfg.typed_per_spoken * len(spoken)))
    train = ExampleSet([*spoken, *(typed[int(i)] for i in rng.permutation(len(typed))[:n_typed])]).freeze()
    val = spoken_examples(speech_items(world, "val"), world / "val" / "instruct.json", enc, clips) \
        if (world / "val" / "speech.json").exists() else []
    lm_source, vision = _sources(cfg.init, spec)
    quantize = bool(spec.get("quantized", False))
    torch.manual_seed(cfg.seed)
    lm = _trainable_lm(cfg.init, spec, quantize)
    projector = load_projector(cfg.init, spec).to(lm.device)
    projector.requires_grad_(False)  # the image route stays as it was
    audio = load_audio_projector(cfg.init, spec).to(lm.device)
    audio.requires_grad_(True)
    spec = {**spec, "stage": "speech-finetune"}
    model = MultimodalLM(lm, projector, spec, None, audio)
    if cfg.projector_lr:
        model.lr_overrides = {"audio_projector.": cfg.projector_lr}

    def save_final(m: MultimodalLM, path: Path) -> None:
        m.save_pretrained(path, tokenizer, lm_source, vision)

    task = ConversationTask(train, val, store, enc.pad_id, cfg.seed, cfg.batch_size,
                            flops_per_token(lm, trainable_body=False), save_final, audio_store=clips)
    facts = {"verb": "speech-finetune", "train_examples": len(train), "spoken_examples": len(spoken),
             "typed_examples": n_typed, "settings": vars(cfg)}
    return _fit_and_report(task, model, cfg, run, facts, (tokenizer, enc, clips),
                           "speech stage 2: LoRA + audio projector on spoken and typed questions")


def _fit_and_report(task, model, cfg, run, facts: dict, reading: tuple, title: str) -> dict:
    """Train, answer the spoken val questions through the embeddings, plot and write summary.json."""
    summary: dict[str, Any] = dict(fit(task, model, cfg, run, facts))
    vqa = _val_vqa(cfg, model, *reading)
    if vqa:
        summary["val_vqa"] = vqa
    run.plot_loss(title)
    run.write_json("summary.json", summary)
    return summary
