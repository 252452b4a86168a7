"""The audio feature store and the speech encoder: lengths, windows, resume, de-duplication, bad clips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import write_wav

from mmphi.audio import AudioError, NoSpeechError, load_audio
from mmphi.audio.features import AudioEncoder
from mmphi.audio.store import AudioFeatureStore
from mmphi.cli import main


@pytest.fixture(scope="module")
def encoder() -> AudioEncoder:
    return AudioEncoder()


def test_store_holds_every_clip_at_ten_tokens_a_second(speech_inputs):
    store = AudioFeatureStore.open(speech_inputs["audio"])
    world = speech_inputs["world"]
    listed = {f"{split}/{it['audio']}": it for split in ("train", "val", "test")
              for it in json.loads((world / split / "speech.json").read_text())}
    assert len(store) == len(listed) == 16 + 6 + 4 + 4  # the val split has only 4 records to speak
    assert store.identity["feature_dim"] == 5 * 384 and store.identity["tokens_per_s"] == 10
    for key in list(listed)[:6]:
        seconds = load_audio(world / key).size / 16000
        # the VAD trims the silence around the speech, so a clip has at most 10 tokens a second
        assert 0.4 * seconds * 10 <= store.tokens(key) <= seconds * 10 + 1
    feats, lengths = store.get_many(list(listed)[:3])
    assert feats.shape == (3, int(lengths.max()), 1920) and torch.equal(lengths, torch.tensor(
        [store.tokens(k) for k in list(listed)[:3]]))
    assert (feats[lengths.argmin(), int(lengths.min()):] == 0).all()  # padding is zeros


def test_rerun_encodes_nothing_again_and_a_lost_shard_is_redone(speech_inputs, tmp_path, capsys):
    out = tmp_path / "audio"
    shutil.copytree(speech_inputs["audio"], out)
    capsys.readouterr()
    assert main(["embed-audio", "--data", str(speech_inputs["world"]), "--out", str(out)]) == 0
    assert "all 30 clips are already in" in capsys.readouterr().err
    summary = json.loads((out / "store.json").read_text())["summary"]
    assert summary["encoded"] == summary["clips"] == 30  # the run that encoded them keeps its figures
    (out / "shards" / ".shard-00009.safetensors.tmp").write_bytes(b"half a shard")  # a killed run's leftover
    for shard in (out / "shards").glob("shard-*.safetensors"):
        shard.unlink()
    assert main(["embed-audio", "--data", str(speech_inputs["world"]), "--out", str(out), "--shard-size", "10"]) == 0
    assert len(AudioFeatureStore.open(out)) == 30 and len(list((out / "shards").glob("shard-*"))) == 3
    assert not list((out / "shards").glob(".*tmp"))


def test_unusable_clips_are_skipped_with_their_reason(speech_world, tmp_path):
    split = tmp_path / "odd"
    (split / "speech").mkdir(parents=True)
    shutil.copy(speech_world / "test" / "speech" / "0000.wav", split / "speech" / "good.wav")
    write_wav(split / "speech" / "silent.wav", np.zeros(16000))
    (split / "speech" / "corrupt.wav").write_bytes(b"RIFF" + b"\x07" * 300)
    names = ("good", "silent", "corrupt")
    (split / "speech.json").write_text(json.dumps([{"audio": f"speech/{n}.wav"} for n in names]))
    assert main(["embed-audio", "--data", str(split), "--out", str(tmp_path / "store")]) == 0
    assert len(AudioFeatureStore.open(tmp_path / "store")) == 1
    reasons = {r["key"]: r["reason"] for r in json.loads((tmp_path / "store" / "report.json").read_text())["skipped"]}
    assert "no speech" in reasons["odd/speech/silent.wav"]
    assert "not a recognised audio format" in reasons["odd/speech/corrupt.wav"]


def test_long_audio_is_encoded_window_by_window_and_over_long_audio_refused(encoder, speech_world):
    clip = encoder.speech(speech_world / "test" / "speech" / "0001.wav")
    long = np.concatenate([clip] * (int(40 * 16000 / clip.size) + 1))  # over 40 s: two 30 s windows
    tokens = encoder.encode(long).shape[0]
    assert abs(tokens - long.size / 16000 * 10) <= 2
    with pytest.raises(AudioError, match="over the limit"):
        AudioEncoder(max_seconds=10).encode(long)


def test_silence_and_noise_are_no_speech(encoder):
    with pytest.raises(NoSpeechError, match="silence"):
        encoder.encode(np.zeros(32000, np.float32))
    noise = np.random.default_rng(0).normal(0, 0.001, 48000).astype(np.float32)
    with pytest.raises(NoSpeechError, match="no speech"):
        encoder.encode(noise)
