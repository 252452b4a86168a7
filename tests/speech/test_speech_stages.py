"""The audio projector's stages on tiny models, and the embedding route in every interface."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_wav
from safetensors.torch import load_file

from mmphi.audio import AudioError, NoSpeechError
from mmphi.cli import main
from mmphi.infer.assistant import Assistant
from mmphi.infer.generate import GenerationParams
from mmphi.infer.inputs import InputError, Message

SHORT = GenerationParams(max_new_tokens=4)


def _weights(path: Path) -> dict:
    return load_file(path)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _adapters(folder: Path) -> dict:
    return _weights(folder / "adapters" / "adapter_model.safetensors")


def test_speech_align_trains_only_the_new_audio_projector(speech_inputs, speech_model):
    init, aligned = speech_inputs["model"], speech_inputs["root"] / "speech-align"
    losses = [json.loads(line)["loss"] for line in (aligned / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and '"split"' not in line]
    assert losses[-1] < losses[0]  # the clips' words become likelier through the projector alone
    final = aligned / "final"
    spec = json.loads((final / "mmphi.json").read_text())
    assert spec["stage"] == "speech-align" and spec["audio"]["projector"]["in_dim"] == 1920
    assert spec["audio"]["identity"]["tokens_per_s"] == 10
    assert (final / "audio_projector.safetensors").exists()
    assert _same(_weights(init / "projector.safetensors"), _weights(final / "projector.safetensors"))
    assert _same(_adapters(init), _adapters(final))


def test_speech_finetune_trains_adapters_and_audio_projector_not_the_image_projector(speech_inputs, speech_model):
    aligned = speech_inputs["root"] / "speech-align" / "final"
    assert _same(_weights(aligned / "projector.safetensors"), _weights(speech_model / "projector.safetensors"))
    assert not _same(_adapters(aligned), _adapters(speech_model))
    assert not _same(_weights(aligned / "audio_projector.safetensors"),
                     _weights(speech_model / "audio_projector.safetensors"))
    facts = json.loads((speech_inputs["root"] / "speech-finetune" / "run.json").read_text())
    assert facts["spoken_examples"] > 0 and facts["typed_examples"] == 2 * facts["spoken_examples"]
    summary = json.loads((speech_inputs["root"] / "speech-finetune" / "summary.json").read_text())
    assert set(summary["val_vqa"]) == {"spoken_embeddings", "typed_same_questions"}


def test_spoken_examples_replace_the_question_by_the_clip(speech_inputs):
    from mmphi.audio.store import AudioFeatureStore
    from mmphi.mm.data import ChatEncoder
    from mmphi.mm.speech import speech_items, spoken_examples
    from mmphi.tokenizer import load_tokenizer

    world = speech_inputs["world"]
    clips = AudioFeatureStore.open(speech_inputs["audio"])
    image_tokens = json.loads((speech_inputs["model"] / "mmphi.json").read_text())["image_tokens"]
    enc = ChatEncoder(load_tokenizer(str(speech_inputs["model"])), image_tokens, "", 256)
    items = [it for it in speech_items(world, "train") if it.get("kind") != "caption"]
    examples = spoken_examples(items, world / "train" / "instruct.json", enc, clips)
    assert len(examples) == len(items)
    for ex, it in zip(examples, items, strict=True):
        assert sum(ex.audio_mask) == clips.tokens(it["key"]) and sum(ex.image_mask) == image_tokens
        text = enc.tok.decode([t for t, a, m in zip(ex.input_ids, ex.audio_mask, ex.image_mask, strict=True)
                               if not a and not m])
        assert it["question"] not in text  # asked by its clip only
        assert f" {it['answer']}<|endoftext|>" in text


@pytest.fixture(scope="module")
def embed_assistant(speech_model) -> Assistant:
    return Assistant.load(speech_model, audio_route="embed")


@pytest.fixture(scope="module")
def question(speech_world) -> dict:
    it = json.loads((speech_world / "test" / "speech.json").read_text())[0]
    return {"audio": speech_world / "test" / it["audio"], "image": speech_world / "test" / "images" / it["image"]}


def test_embedding_route_answers_without_a_transcript_and_asr_route_still_transcribes(embed_assistant, question,
                                                                                       speech_model):
    reply = embed_assistant.reply([Message("user", "", image=question["image"], audio=question["audio"])], SHORT)
    assert reply.transcripts == [] and reply.tokens > 0
    rounds, _, _, _, clip = embed_assistant._rounds([Message("user", "", image=question["image"],
                                                             audio=question["audio"])])
    ex, _ = embed_assistant._fit(rounds, 0, 200, clip)
    assert clip is not None and sum(ex.audio_mask) == clip.shape[0] and "<audio>" in rounds[0][0]
    asr = Assistant.load(speech_model, audio_route="asr")
    assert asr.reply([Message("user", "", image=question["image"], audio=question["audio"])], SHORT).transcripts


def test_real_human_speech_goes_through_the_embedding_route(embed_assistant, question):
    import gradio

    clip = Path(gradio.__file__).parent / "media_assets" / "audio" / "heath_ledger.mp3"  # an actor's line, 3 s
    reply = embed_assistant.reply([Message("user", "", image=question["image"], audio=clip)], SHORT)
    assert reply.tokens > 0 and reply.transcripts == []


def test_embedding_route_refuses_bad_audio_and_models_without_a_projector(embed_assistant, speech_inputs, tmp_path):
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000))
    with pytest.raises(NoSpeechError, match="no speech"):
        embed_assistant.reply([Message("user", "", audio=silent)], SHORT)
    with pytest.raises(AudioError, match="not a recognised audio format"):
        embed_assistant.reply([Message("user", "", audio=b"RIFF" + b"\x01" * 400)], SHORT)
    with pytest.raises(InputError, match="no audio projector"):
        Assistant.load(speech_inputs["model"], audio_route="embed")


def test_chat_cli_takes_the_audio_route(speech_model, question, capsys):
    assert main(["chat", "--model", str(speech_model), "--image", str(question["image"]), "--audio",
                 str(question["audio"]), "--audio-route", "embed", "--max-new-tokens", "4", "--no-describe-first"]) == 0
    assert "heard" not in capsys.readouterr().out


def test_api_reads_input_audio_as_embeddings_and_refuses_bad_audio(embed_assistant, speech_model, question):
    import httpx

    from mmphi.serve.api import create_app
    from mmphi.serve.background import serve_in_thread
    from mmphi.serve.config import ServeConfig

    cfg = ServeConfig(model=str(speech_model), audio_route="embed", max_new_tokens=4)
    wav = base64.b64encode(question["audio"].read_bytes()).decode()
    with serve_in_thread(create_app(cfg, assistant_loader=lambda _: embed_assistant)) as url:
        for _ in range(600):
            if httpx.get(url + "/health").status_code == 200:
                break
        body = {"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}]}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["mmphi"].get("transcripts", []) == []
        body["messages"][0]["content"][0]["input_audio"]["data"] = base64.b64encode(b"\x01\x02" * 500).decode()
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_audio"


def test_app_says_the_embedding_route_hears_no_words(embed_assistant, speech_model, question):
    from mmphi.serve.app import EMBED_HEARD, make_responder
    from mmphi.serve.config import AppConfig

    respond = make_responder(embed_assistant, AppConfig(model=str(speech_model), max_new_tokens=4))
    updates = list(respond("", str(question["image"]), str(question["audio"]), 4, 0.0, [], []))
    assert any(u[2] == EMBED_HEARD for u in updates)
    history = updates[-1][1]
    assert history[0].text == "(a spoken question)" and history[1].role == "assistant"


def test_eval_reports_spoken_accuracy_by_route_beside_typed(speech_model, speech_world, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(speech_model), "--data", str(speech_world / "test"), "--out", str(out),
                 "--audio-routes", "asr,embed", "--captions", "0", "--no-describe-first"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["vqa"]["spoken (embeddings)"]["overall"]["n"] == 4
    assert results["vqa"]["spoken"]["overall"]["n"] == 4 and results["speech_embed"]["tokens_per_clip"] > 0
    report = (out / "results.md").read_text()
    assert "## Speech by route" in report and "spoken, embeddings (audio projector)" in report
