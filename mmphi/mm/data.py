"""Conversations and captions -> token ids, labels and image-placeholder masks (DESIGN §5).

Template (``mmphi.chat``): ``{system} USER: <image>\\n{q} ASSISTANT: {a}<|endoftext|>USER: ...``.
Each text segment is tokenised on its own and the image placeholder is expanded into
``image_tokens`` positions, recorded in an explicit mask (never found by matching token ids).
Labels are -100 everywhere except on assistant answers and their EOS. A data set's examples are held in
an ``ExampleSet``: a few arrays instead of four Python lists per example.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
import torch

from mmphi.chat import ASSISTANT, AUDIO, CAPTION_PROMPTS, IMAGE, user_prefix
from mmphi.errors import MmphiError

IGNORE = -100
_PLACEHOLDER = re.compile(f"({re.escape(IMAGE)}|{re.escape(AUDIO)})")


class DataError(MmphiError):
    pass


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    image_mask: list[bool]
    image: str | None  # feature-store key
    id: str
    types: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # per label token: 1 / length of its answer
    audio: str | None = None  # audio feature-store key (speech read as embeddings at the <audio> placeholder)
    audio_mask: list[bool] = field(default_factory=list)  # empty = no audio

    def __len__(self) -> int:
        return len(self.input_ids)


class ChatEncoder:
    """Tokenises (user, answer) rounds into an ``Example``; the same code serves training and inference."""

    MEMO = 1 << 16  # texts whose ids are remembered: templates, questions and answers recur across a data set

    def __init__(self, tokenizer, image_tokens: int, system: str = "", max_len: int = 512):
        self.tok, self.image_tokens, self.system, self.max_len = tokenizer, image_tokens, system, max_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        self._memo: dict[str, tuple[int, ...]] = {}

    def ids(self, text: str) -> list[int]:
        # A user who types "<|endoftext|>" gets those characters, not a turn boundary: special tokens
        # only ever enter through the template (the EOS ids appended after answers).
        if not text:
            return []
        known = self._memo.get(text)
        if known is None:
            known = tuple(self.tok(text, add_special_tokens=False, split_special_tokens=True).input_ids)
            if len(self._memo) >= self.MEMO:
                self._memo.clear()  # a data set of mostly unique texts: start over rather than grow
            self._memo[text] = known
        return list(known)

    def prompt_ids(self, user: str, first: bool, audio_tokens: int = 0) -> tuple[list[int], list[bool], list[bool]]:
        """Ids, image mask and audio mask of one user turn up to and including "ASSISTANT:".

        ``<image>`` expands to ``image_tokens`` placeholder positions, ``<audio>`` to ``audio_tokens``
        (a clip's length in audio tokens): both are replaced by projected features.
        """
        text = f"{user_prefix(self.system, first)}{user} {ASSISTANT}"
        parts = _PLACEHOLDER.split(text)
        if parts.count(IMAGE) > 1 or parts.count(AUDIO) > 1:
            raise DataError("a conversation may hold at most one <image> and one <audio>")
        ids: list[int] = []
        image: list[bool] = []
        audio: list[bool] = []
        for part in parts:
            n = {IMAGE: self.image_tokens, AUDIO: audio_tokens}.get(part)
            piece = [self.pad_id] * n if n is not None else self.ids(part)  # placeholder ids: replaced by features
            ids += piece
            image += [part == IMAGE] * len(piece)
            audio += [part == AUDIO] * len(piece)
        return ids, image, audio

    def encode(self, rounds: Sequence[tuple[str, str | None]], image: str | None, id: str = "",
               types: Sequence[str] = (), audio: str | None = None, audio_tokens: int = 0) -> Example | None:
        """Whole rounds are kept while they fit ``max_len``; the image is never cut (None if it cannot fit).

        ``audio``: the feature key of the clip standing at the ``<audio>`` placeholder, ``audio_tokens`` long.
        """
        ids: list[int] = []
        labels: list[int] = []
        mask: list[bool] = []
        amask: list[bool] = []
        weights: list[float] = []
        kept = 0
        for i, (user, answer) in enumerate(rounds):
            p_ids, p_mask, p_audio = self.prompt_ids(user, first=i == 0, audio_tokens=audio_tokens)
            a_ids = [] if answer is None else self.ids(f" {answer}") + [self.eos_id]
            if len(ids) + len(p_ids) + len(a_ids) > self.max_len:
                if i > 0:
                    break  # drop this and later rounds
                if len(p_ids) >= self.max_len:
                    return None  # even the first question (with its image) does not fit
                a_ids = a_ids[: self.max_len - len(p_ids)]  # cut the first answer's tail, never the image
            ids += p_ids + a_ids
            labels += [IGNORE] * len(p_ids) + a_ids
            mask += p_mask + [False] * len(a_ids)
            amask += p_audio + [False] * len(a_ids)
            weights += [0.0] * len(p_ids) + [1.0 / max(len(a_ids), 1)] * len(a_ids)  # a prompt-only round has no answer
            kept += 1
        if image is not None and sum(mask) != self.image_tokens:
            raise DataError(f"record {id!r} has an image but no <image> placeholder in its first turn")
        if audio is not None and any(amask) and sum(amask) != audio_tokens:
            raise DataError(f"record {id!r}: {sum(amask)} audio positions for a clip of {audio_tokens} tokens")
        has_audio = audio is not None and any(amask)
        return Example(ids, labels, mask, image if any(mask) else None, id, list(types)[:kept], weights,
                       audio if has_audio else None, amask if has_audio else [])


class ExampleSet(Sequence[Example]):
    """Encoded examples held compactly: every example's token ids in one array (uint16 while the ids fit), one
    byte of flags per token (answer label, image position) and the offsets where each example starts; in
    Python lists an example costs ~36 B per token for its ids alone, ~12 GiB per process for COCO train2017's
    captions with 576 image positions (docs/gpu.md). Indexing rebuilds the very ``Example`` the encoder made:
    labels are the ids at the label positions, and each answer's weights are 1 / its length, an answer being
    one run of label positions (the template puts a prompt between any two answers). ``add`` checks both;
    the first read freezes the set (no ``add`` after it). A spoken example's audio positions are a third flag
    beside its clip's key (``audio``, ``audio_mask``: both or neither)."""

    LABEL, IMAGE, AUDIO = 1, 2, 4

    def __init__(self, examples: Iterable[Example] = ()) -> None:
        self._buffers: tuple[array, array, array] | None = (array("i"), array("B"), array("q", [0]))  # while adding
        self._ids = self._flags = self._offsets = np.zeros(0, np.int64)  # (frozen: ids, flags, offsets)
        self.images: list[str | None] = []
        self.ids: list[str] = []
        self.types: list[tuple[str, ...]] = []
        self.audios: list[str | None] = []
        for ex in examples:
            self.add(ex)

    def add(self, ex: Example) -> None:
        if self._buffers is None:
            raise TypeError("this ExampleSet has been read: it is frozen")
        all_ids, all_flags, offsets = self._buffers
        ids = array("i", ex.input_ids)
        labels = np.frombuffer(array("i", ex.labels), dtype=np.int32)
        label = labels != IGNORE
        image = np.asarray(ex.image_mask, dtype=bool)
        if not np.array_equal(labels[label], np.frombuffer(ids, dtype=np.int32)[label]) or \
                not np.array_equal(answer_weights(label), ex.weights or np.zeros(len(ids))):
            raise ValueError(f"example {ex.id!r}: labels are not the ids of one-run answers (not for an ExampleSet)")
        if (ex.audio is None) != (not ex.audio_mask) or (ex.audio_mask and len(ex.audio_mask) != len(ids)):
            raise ValueError(f"example {ex.id!r}: an audio key needs an audio mask as long as its ids, and a mask "
                             "its key (not for an ExampleSet)")
        audio = np.asarray(ex.audio_mask, dtype=bool) if ex.audio_mask else np.zeros(len(ids), dtype=bool)
        all_ids.extend(ids)
        all_flags.frombytes((label * self.LABEL + image * self.IMAGE + audio * self.AUDIO).astype(np.uint8).tobytes())
        offsets.append(len(all_ids))
        self.images.append(ex.image)
        self.ids.append(ex.id)
        self.types.append(tuple(ex.types))
        self.audios.append(ex.audio)

    def freeze(self) -> ExampleSet:
        """Turn the growing buffers into numpy arrays (the ids into uint16 when they fit)."""
        if self._buffers is not None:
            all_ids, all_flags, offsets = self._buffers
            ids = np.frombuffer(all_ids, dtype=np.int32)
            small = len(ids) == 0 or (ids.min() >= 0 and ids.max() < 2**16)
            self._ids = ids.astype(np.uint16) if small else ids.copy()
            self._flags = np.frombuffer(all_flags, dtype=np.uint8).copy()
            self._offsets = np.frombuffer(offsets, dtype=np.int64).copy()
            self._buffers = None
        return self

    def __len__(self) -> int:
        return len(self.images)

    @overload
    def __getitem__(self, i: int) -> Example: ...

    @overload
    def __getitem__(self, i: slice) -> list[Example]: ...

    def __getitem__(self, i: int | slice) -> Example | list[Example]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"example {i} of {n}")
        i %= n
        self.freeze()
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        ids = self._ids[a:b].astype(np.int64)
        flags = self._flags[a:b]
        label = (flags & self.LABEL).astype(bool)
        audio = self.audios[i]
        return Example(ids.tolist(), np.where(label, ids, IGNORE).tolist(), (flags & self.IMAGE).astype(bool).tolist(),
                       self.images[i], self.ids[i], list(self.types[i]), answer_weights(label).tolist(),
                       audio, (flags & self.AUDIO).astype(bool).tolist() if audio is not None else [])

    def __eq__(self, other: object) -> bool:  # as the list of the same examples compares
        return isinstance(other, Sequence) and len(self) == len(other) and \
            all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def lengths(self) -> np.ndarray:
        self.freeze()
        return np.diff(self._offsets)


def answer_weights(label: np.ndarray) -> np.ndarray:
    """1 / the length of its answer at each label position, 0.0 elsewhere (an answer: one run of labels)."""
    if not len(label):
        return np.zeros(0)
    starts = label & ~np.concatenate(([False], label[:-1]))
    run = np.cumsum(starts)[label] - 1  # which answer each label position belongs to
    weights = np.zeros(len(label))
    weights[label] = 1.0 / np.bincount(run)[run]
    return weights


def lengths(examples: Sequence[Example]) -> list[int]:
    """Tokens per example (without rebuilding the examples of an ``ExampleSet``)."""
    return examples.lengths().tolist() if isinstance(examples, ExampleSet) else [len(e) for e in examples]


def with_image(examples: Sequence[Example]) -> list[bool]:
    images = examples.images if isinstance(examples, ExampleSet) else [e.image for e in examples]
    return [k is not None for k in images]


def _image_first(text: str) -> str:
    return text if IMAGE in text else f"{IMAGE}\n{text}"


def llava_examples(path: Path, enc: ChatEncoder) -> tuple[ExampleSet, int]:
    """LLaVA-Instruct-150K records -> examples; returns (examples, records skipped as too long)."""
    try:
        records = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read conversations {path}: {err}") from err
    out, skipped = ExampleSet(), 0
    for n, r in enumerate(records):
        conv = r.get("conversations")
        if not conv or len(conv) % 2 or any(t.get("from") != want for t, want in
                                                 zip(conv, ["human", "gpt"] * len(conv), strict=False)):
            raise DataError(f"{path}: record {r.get('id', n)!r} is not alternating human/gpt turns")
        rounds = [(conv[k]["value"].strip(), conv[k + 1]["value"].strip()) for k in range(0, len(conv), 2)]
        image = r.get("image")
        if image is not None:
            rounds[0] = (_image_first(rounds[0][0]), rounds[0][1])
        else:
            rounds = [(u.replace(IMAGE, "").strip(), a) for u, a in rounds]
        ex = enc.encode(rounds, image, str(r.get("id", n)), r.get("types", ()))
        if ex is None:
            skipped += 1
        else:
            out.add(ex)
    return out.freeze(), skipped


def caption_examples(path: Path, enc: ChatEncoder, blind: bool = False) -> ExampleSet:
    """COCO captions -> one example per caption; the prompt varies, deterministically per annotation."""
    try:
        coco = json.loads(Path(path).read_text())
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        anns = coco["annotations"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"cannot read COCO captions {path}: {err}") from err
    out = ExampleSet()
    for ann in anns:
        prompt = CAPTION_PROMPTS[ann["id"] % len(CAPTION_PROMPTS)]
        if not blind:
            prompt = f"{prompt}\n{IMAGE}" if ann["id"] % 2 else f"{IMAGE}\n{prompt}"
        ex = enc.encode([(prompt, ann["caption"].strip())], None if blind else names[ann["image_id"]],
                        f"caption-{ann['id']}")
        if ex is not None:
            out.add(ex)
    return out.freeze()


def collate(examples: Sequence[Example], pad_id: int, store=None, per_answer: bool = False,
            audio_store=None) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; the attention mask comes from lengths (EOS is also PAD).

    ``per_answer``: add ``loss_weights`` so that every answer counts once in the loss, whatever its
    length (with a plain token mean, one 25-token description outweighs a dozen one-word answers).
    """
    width = max(len(e) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    image_mask = torch.zeros((n, width), dtype=torch.bool)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e)
        input_ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        image_mask[i, :k] = torch.tensor(e.image_mask)
        attention[i, :k] = 1
    batch = {"input_ids": input_ids, "labels": labels, "image_mask": image_mask, "attention_mask": attention}
    if per_answer:
        weights = torch.zeros((n, width))
        for i, e in enumerate(examples):
            weights[i, : len(e)] = torch.tensor(e.weights)
        batch["loss_weights"] = weights
    keys = [e.image for e in examples if e.image is not None]
    if keys:
        if store is None:
            raise DataError("these examples have images but no feature store was given")
        missing = [e for e in examples if e.image is not None and e.image not in store]
        if missing:
            raise DataError(f"record {missing[0].id!r}: image {missing[0].image!r} is not in the feature store "
                            f"{getattr(store, 'path', '')} (run `mmphi embed` on these images)")
        batch["features"] = store.get_many(keys)  # (n_images, N, D)
    if any(e.audio is not None for e in examples):
        batch.update(audio_batch(examples, width, audio_store))
    return batch


def audio_mask(examples: Sequence[Example], width: int, left: bool = False) -> torch.Tensor:
    """(n, width) bool: where each example's audio tokens stand (right- or left-padded like its ids)."""
    out = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, e in enumerate(examples):
        if e.audio_mask:
            k = len(e)
            if left:
                out[i, width - k:] = torch.tensor(e.audio_mask)
            else:
                out[i, :k] = torch.tensor(e.audio_mask)
    return out


def audio_batch(examples: Sequence[Example], width: int, audio_store, left: bool = False) -> dict[str, torch.Tensor]:
    """``audio_mask`` and the clips' features (n_clips, longest, D) with their ``audio_lengths``."""
    if audio_store is None:
        raise DataError("these examples have audio but no audio feature store was given")
    keys = [e.audio for e in examples if e.audio is not None]
    missing = [k for k in keys if k not in audio_store]
    if missing:
        raise DataError(f"clip {missing[0]!r} is not in the audio feature store {getattr(audio_store, 'path', '')} "
                        "(run `mmphi embed-audio` on the world)")
    feats, lengths = audio_store.get_many(keys)
    return {"audio_mask": audio_mask(examples, width, left), "audio_features": feats, "audio_lengths": lengths}
