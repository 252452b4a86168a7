"""The bundled tiny CLIP vision tower (``mmphi/tiny-clip``): what the tiny recipe's stages 1-2 read images with.

``mmphi clip ... --bundle-into DIR`` ends a CLIP run by writing its vision tower as a bundled model
folder: ``config.json`` (a ``clip_vision_model``), ``model.safetensors``, the image processor, a model
card (``README.md``: the command, data, figures, sha256) and ``bundle.json``. Only the vision tower:
stages 1-2 never use the text tower, and leaving it out keeps the folder at about 5 MB.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmphi.bundled import WEIGHTS, sha256_of

FORMAT = "mmphi bundled vision tower v1"


def export_vision_bundle(clip_dir: Path, into: Path, facts: dict) -> dict:
    """Write the vision tower of the CLIPModel folder ``clip_dir`` to ``into``; returns bundle.json's content."""
    from transformers import AutoImageProcessor, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    full = CLIPModel.from_pretrained(clip_dir)
    vision = full.config.vision_config
    assert isinstance(vision, CLIPVisionConfig), "CLIPConfig makes its vision_config a CLIPVisionConfig"
    tower = CLIPVisionModel(vision)
    tower.load_state_dict(full.vision_model.state_dict())  # strict: every weight of the tower, nothing else
    into.mkdir(parents=True, exist_ok=True)
    tower.save_pretrained(into)
    AutoImageProcessor.from_pretrained(clip_dir).save_pretrained(into)
    facts = {"format": FORMAT, **facts, "weights": WEIGHTS, "params": sum(p.numel() for p in tower.parameters()),
             "sha256": sha256_of(into / WEIGHTS)}
    (into / "bundle.json").write_text(json.dumps(facts, indent=1) + "\n")
    (into / "README.md").write_text(model_card(facts))
    return facts


def model_card(facts: dict) -> str:
    r = facts.get("retrieval", {})
    cfg = facts.get("vision_config", {})
    return "\n".join([
        f"# {facts.get('name', 'mmphi/tiny-clip')}: the tiny CLIP's vision tower", "",
        "The image encoder of the tiny recipe's multimodal model: stages 1-2 read its penultimate layer's "
        f"{cfg.get('grid', 3)}x{cfg.get('grid', 3)} patch tokens (one per shapes-world cell). Trained by mmphi as a "
        "two-tower CLIP on the shapes world's image/caption pairs; only the vision tower is kept.", "",
        "## Reproduce", "", "```bash", *facts.get("commands", []), "```", "",
        "## Data", "",
        f"- world: seed {facts.get('world_seed')}, {facts.get('train_images')} train images (captions of the "
        "train split only; the val split scores retrieval, the test split is never seen)", "",
        "## Training and figures", "",
        f"- {facts.get('steps')} steps, batch {facts.get('batch_size')}, {facts.get('minutes')} minutes on "
        f"{facts.get('machine', 'a 2-core CPU')}",
        f"- image->caption retrieval on {r.get('n')} val images: top-1 {100 * r.get('top1', 0):.1f}% "
        f"(chance {100 * r.get('chance', 0):.1f}%)",
        *[f"- {line}" for line in facts.get("figures", [])], "",
        "## Weights", "", f"`{WEIGHTS}` sha256 `{facts['sha256']}` ({facts['params']:,} parameters, fp32)", ""])
