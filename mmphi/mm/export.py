"""``finetune --merge``: fold the LoRA adapters into full-precision LM weights for serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mmphi.lm.loading import load_causal_lm
from mmphi.mm.model import read_spec, resolve


def merge_adapters(src: Path, dest: Path) -> Path:
    """Copy ``src`` (a stage-2 final/) to ``dest`` with ``lm/`` = base LM + adapters merged, no adapters.

    The base LM is loaded in full precision: merging into dequantised 4-bit weights would bake the
    quantisation error in, and serving wants plain weights anyway.
    """
    from peft import PeftModel

    spec = read_spec(src)
    if "adapters" not in spec:
        raise ValueError(f"{src} has no adapters to merge")
    lm = load_causal_lm(resolve(src, spec["lm"]), quantize=False)
    merged = PeftModel.from_pretrained(lm, src / spec["adapters"]).merge_and_unload()
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("adapters", "lm"))
    merged.save_pretrained(tmp / "lm")
    spec = {k: v for k, v in spec.items() if k != "adapters"}
    spec.update({"lm": "lm", "quantized": False, "merged": True})
    (tmp / "mmphi.json").write_text(json.dumps(spec, indent=1))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest
