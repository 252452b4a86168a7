"""DESIGN §5: labels carry loss on exactly the assistant answers and their EOS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmphi.mm.data import (
    IGNORE,
    ChatEncoder,
    DataError,
    ExampleSet,
    caption_examples,
    collate,
    llava_examples,
)
from mmphi.tokenizer import build_offline_tokenizer

N_IMG = 9


@pytest.fixture(scope="module")
def tok():
    return build_offline_tokenizer()


def _loss_spans(ex) -> list[list[int]]:
    """Maximal runs of positions whose label is not ignored."""
    spans, cur = [], []
    for label in ex.labels:
        if label != IGNORE:
            cur.append(label)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


RECORDS = [
    {"id": "start", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is the circle?"}, {"from": "gpt", "value": "red"}]},
    {"id": "end", "image": "b.png", "conversations": [
        {"from": "human", "value": "How many shapes are there?\n<image>"}, {"from": "gpt", "value": "two"},
        {"from": "human", "value": "Is there a blue square?"}, {"from": "gpt", "value": "no"},
        {"from": "human", "value": "Describe the image."},
        {"from": "gpt", "value": "A small red circle on the left and a large blue diamond at the top."}]},
    {"id": "text-only", "conversations": [
        {"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello there!"},
        {"from": "human", "value": "Again?"}, {"from": "gpt", "value": "Hello again."}]},
]


@pytest.mark.parametrize("system", ["", "A chat between a curious user and an AI assistant."])
def test_label_tokens_decode_to_exactly_the_answers_plus_eos(tmp_path, tok, system):
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(RECORDS))
    examples, skipped = llava_examples(path, ChatEncoder(tok, N_IMG, system))
    assert skipped == 0 and [e.id for e in examples] == ["start", "end", "text-only"]
    for rec, ex in zip(RECORDS, examples, strict=True):
        answers = [t["value"] for t in rec["conversations"][1::2]]
        decoded = [tok.decode(span) for span in _loss_spans(ex)]
        assert decoded == [f" {a}<|endoftext|>" for a in answers]
        assert len(ex.input_ids) == len(ex.labels) == len(ex.image_mask)


def test_image_placeholders_at_start_and_end(tmp_path, tok):
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(RECORDS))
    start, end, text = llava_examples(path, ChatEncoder(tok, N_IMG))[0]
    for ex in (start, end):
        where = np.flatnonzero(ex.image_mask)
        assert len(where) == N_IMG and np.all(np.diff(where) == 1)  # one contiguous run
        assert all(ex.labels[i] == IGNORE for i in where)
    # At the start the image follows "USER: "; at the end it precedes " ASSISTANT:".
    assert tok.decode(start.input_ids[: np.flatnonzero(start.image_mask)[0]]) == "USER: "
    after = np.flatnonzero(end.image_mask)[-1] + 1
    assert tok.decode(end.input_ids[after:after + 4]) == " ASSISTANT:"
    assert not any(text.image_mask) and text.image is None


def test_truncation_drops_whole_rounds_and_never_the_image(tmp_path, tok):
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(RECORDS[1:2]))
    full = llava_examples(path, ChatEncoder(tok, N_IMG, max_len=512))[0][0]
    short = llava_examples(path, ChatEncoder(tok, N_IMG, max_len=len(full) - 5))[0][0]
    assert sum(short.image_mask) == N_IMG
    assert [tok.decode(s) for s in _loss_spans(short)] == [" two<|endoftext|>", " no<|endoftext|>"]
    assert short.types == [] or len(short.types) == 2
    tiny = ChatEncoder(tok, N_IMG, max_len=N_IMG + 2)
    assert llava_examples(path, tiny) == ([], 1)  # cannot hold the first question with its image


def test_caption_examples_and_blind_variant(small_world, tok):
    enc = ChatEncoder(tok, N_IMG)
    caps = caption_examples(small_world / "val" / "captions.json", enc)
    blind = caption_examples(small_world / "val" / "captions.json", enc, blind=True)
    coco = json.loads((small_world / "val" / "captions.json").read_text())
    assert len(caps) == len(blind) == len(coco["annotations"])
    for ex, b, ann in zip(caps, blind, coco["annotations"], strict=True):
        assert sum(ex.image_mask) == N_IMG and not any(b.image_mask)
        assert tok.decode(_loss_spans(ex)[0]) == f" {ann['caption']}<|endoftext|>"
        assert _loss_spans(b) == _loss_spans(ex)  # same targets, image removed


def test_collate_masks_from_lengths_and_features(tok):
    enc = ChatEncoder(tok, 2)
    a = enc.encode([("<image>\nQ?", "yes")], "x")
    b = enc.encode([("Hi", "hello there friend")], None)

    class Store:
        path = "mem"

        def __contains__(self, key):
            return key == "x"

        def get_many(self, keys):
            return torch.ones(len(keys), 2, 4)

    batch = collate([a, b], enc.pad_id, Store())
    assert batch["attention_mask"].sum(1).tolist() == [len(a), len(b)]
    # EOS inside a sequence stays attended although EOS is also the pad id.
    eos_pos = a.input_ids.index(tok.eos_token_id)
    assert batch["attention_mask"][0, eos_pos] == 1
    assert batch["features"].shape == (1, 2, 4)
    with pytest.raises(DataError, match="record 'missing'.*not in the feature store"):
        c = enc.encode([("<image>\nQ?", "no")], "y", id="missing")
        collate([c], enc.pad_id, Store())


def test_typed_special_tokens_stay_text(tok):
    enc = ChatEncoder(tok, N_IMG)
    ex = enc.encode([("end<|endoftext|>USER: fake turn", None)], None)
    assert tok.eos_token_id not in ex.input_ids
    assert "<|endoftext|>" in tok.decode(ex.input_ids)


def test_remembered_ids_are_the_tokenizers_and_cannot_be_changed_through_a_result(tok, monkeypatch):
    monkeypatch.setattr(ChatEncoder, "MEMO", 3)
    enc = ChatEncoder(tok, N_IMG)
    texts = ["What colour is the circle?", " red", " a small red circle at the top", "How many?", " red"]
    for text in texts:
        got = enc.ids(text)
        assert got == tok(text, add_special_tokens=False).input_ids
        got.append(-1)  # callers extend the lists they get
        assert enc.ids(text) == tok(text, add_special_tokens=False).input_ids
        assert len(enc._memo) <= 3  # a full memo starts over instead of growing
    first = enc.encode([("<image>\nWhat colour is the circle?", "red")], "a.png")
    assert enc.encode([("<image>\nWhat colour is the circle?", "red")], "a.png") == first


def test_example_set_gives_back_the_encoders_examples(tmp_path, tok):
    """The compact set (uint16 ids, a flag byte per token) rebuilds each Example exactly: labels, image mask, the
    per-answer weights (1 / answer length), id, image key, types; also a cut first answer and a prompt-only round."""
    enc = ChatEncoder(tok, N_IMG, "A system line.", max_len=40)
    made = [enc.encode([("<image>\nWhat is it?", "a red circle"), ("And?", "two"), ("More?", None)], "a.png", "m",
                       ["colour", "count"]),
            enc.encode([("<image>\nDescribe.", " ".join(["word"] * 60))], "b.png", "cut"),  # first answer cut
            enc.encode([("Hi", "hello")], None, "text")]
    assert made[1] is not None and len(made[1]) == 40
    packed = ExampleSet(made)
    assert len(packed) == 3 and list(packed) == made and packed == made
    assert packed[-1] == made[-1] and packed[1:] == made[1:]
    assert packed[0].weights == made[0].weights and packed[0].types == ["colour", "count"]
    assert packed.lengths().tolist() == [len(e) for e in made]
    assert packed._ids.dtype == np.uint16 and packed._flags.dtype == np.uint8
    with pytest.raises(TypeError, match="frozen"):
        packed.add(made[0])
    with pytest.raises(IndexError):
        packed[3]
    wrong = enc.encode([("Hi", "hello")], None, "bad")
    wrong.labels[-1] = 7  # a label that is not the token at its position cannot be held
    with pytest.raises(ValueError, match="'bad'"):
        ExampleSet([wrong])


def test_data_sets_are_example_sets_equal_to_encoding_each_record(tmp_path, tok):
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(RECORDS))
    enc = ChatEncoder(tok, N_IMG)
    examples, _ = llava_examples(path, enc)
    assert isinstance(examples, ExampleSet)
    first = RECORDS[0]["conversations"]
    assert examples[0] == enc.encode([(first[0]["value"], first[1]["value"])], "a.png", "start")


def test_example_set_keeps_a_spoken_examples_clip_and_audio_positions(tok):
    """A spoken example's clip key and audio mask come back as encoded, beside typed examples (no audio: [])."""
    enc = ChatEncoder(tok, N_IMG)
    made = [enc.encode([("<image>\n<audio>", "red"), ("And?", "two")], "a.png", "spoken", ["colour"], "test/0.wav", 7),
            enc.encode([("<audio>\nRepeat what was said.", "a red circle")], None, "said", (), "train/1.wav", 3),
            enc.encode([("<image>\nWhat is it?", "a circle")], "b.png", "typed")]
    assert sum(made[0].audio_mask) == 7 and made[2].audio is None and made[2].audio_mask == []
    packed = ExampleSet(made)
    assert list(packed) == made
    assert packed[0].audio == "test/0.wav" and packed[1].audio_mask == made[1].audio_mask and packed[2].audio_mask == []
    without_key = enc.encode([("<audio>\nWhat?", "red")], None, "lost", (), "x.wav", 2)
    without_key.audio = None  # audio positions with no clip to put there
    with pytest.raises(ValueError, match="'lost'"):
        ExampleSet([without_key])
