from __future__ import annotations

import pytest

from mmphi.tokenizer import EOS_ID, build_offline_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_offline_tokenizer()


def test_known_gpt2_phi2_ids(tok):
    # Ids shared by GPT-2 and Phi-2 (their BPE is identical for ids 0-50256).
    assert tok("Hello world").input_ids == [15496, 995]
    assert tok(" the").input_ids == [262]
    assert tok("<|endoftext|>").input_ids == [EOS_ID]
    assert tok.eos_token_id == EOS_ID and tok.pad_token_id == EOS_ID


def test_no_whisper_special_tokens_leak(tok):
    vocab = tok.get_vocab()
    assert len(vocab) == 50257 and max(vocab.values()) == EOS_ID
    assert not any(t.startswith("<|") and t != "<|endoftext|>" for t in vocab)
    # No post-processor: Whisper would wrap text in <|startoftranscript|><|notimestamps|> ... EOS.
    assert tok("a").input_ids == [64]


def test_round_trip_and_save_load(tok, tmp_path):
    text = "USER: What colour is the circle? ASSISTANT: red<|endoftext|>"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    assert again(text).input_ids == ids and again.eos_token_id == EOS_ID
