"""Models that ship inside the mmphi package, named the way hub models are.

The tiny recipe builds its multimodal model on ``mmphi/tiny-phi-base``, a tiny Phi pretrained by
mmphi's own recipe (``mmphi base``), as the phi2 recipe builds on ``microsoft/phi-2``. A bundled
model is an ordinary ``from_pretrained`` folder inside the package (``mmphi/models/NAME/``: config,
safetensors, tokenizer, a model card, ``bundle.json`` with the weights' sha256), so it needs no
network: every place that loads a model passes its source through ``resolve_model`` first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mmphi.errors import MmphiError

MODELS_DIR = Path(__file__).resolve().parent / "models"
PREFIX = "mmphi/"
TINY_BASE = "mmphi/tiny-phi-base"
WEIGHTS = "model.safetensors"


def bundled_names() -> list[str]:
    return sorted(PREFIX + p.name for p in MODELS_DIR.glob("*") if (p / "config.json").is_file())


def bundled_path(name: str) -> Path:
    """The folder of a bundled model, or a clear error naming the ones there are."""
    folder = MODELS_DIR / name[len(PREFIX):] if name.startswith(PREFIX) else None
    if folder is None or not (folder / "config.json").is_file():
        known = ", ".join(bundled_names()) or "none"
        raise MmphiError(f"{name!r} is not a model bundled with mmphi (bundled: {known})")
    return folder


def resolve_model(source: str) -> str:
    """A bundled name (``mmphi/tiny-phi-base``) -> its folder; anything else (a folder, a hub id) unchanged.

    An existing path always wins, so a folder that happens to be called ``mmphi/...`` still loads.
    """
    if not source.startswith(PREFIX) or Path(source).exists():
        return source
    return str(bundled_path(source))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_facts(source: str) -> dict | None:
    """What ``bundle.json`` of a bundled model (by name or folder) records: sha256, live vocabulary, training
    figures; None for a model without one (a hub id, a plain folder, an unknown ``mmphi/`` name)."""
    try:
        facts = Path(resolve_model(source)) / "bundle.json"
    except MmphiError:
        return None
    return json.loads(facts.read_text()) if facts.is_file() else None
