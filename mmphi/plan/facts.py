"""Model shapes for a plan, read without loading weights: a local folder's config.json, or built-in facts.

Offline, the real configs of hub models are not on disk, so the ones the phi2 recipe names are facts here
(their config.json on the hub). A folder (a run's ``final/``, a bundled ``mmphi/...`` model) is read instead.
Parameter counts are computed from the shapes, tensor by tensor, as ``transformers`` builds the models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmphi.bundled import bundle_facts, resolve_model
from mmphi.errors import MmphiError
from mmphi.lm.config import PHI2_ARCH

# PhiConfig's defaults (transformers), for a recipe's model mapping that leaves a field out.
PHI_DEFAULTS = {"vocab_size": 51200, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                "num_attention_heads": 32, "num_key_value_heads": None, "max_position_embeddings": 2048}
KNOWN_LMS = {"microsoft/phi-2": {"model_type": "phi", **PHI2_ARCH}}
# The vision towers' config.json (vision_config) on the hub; features are the patch tokens (CLS dropped).
KNOWN_VISION = {
    "openai/clip-vit-base-patch32": {"image_size": 224, "patch_size": 32, "hidden_size": 768, "num_hidden_layers": 12,
                                     "num_attention_heads": 12, "intermediate_size": 3072, "projection_dim": 512},
    "openai/clip-vit-large-patch14": {"image_size": 224, "patch_size": 14, "hidden_size": 1024,
                                      "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                                      "projection_dim": 768},
    "openai/clip-vit-large-patch14-336": {"image_size": 336, "patch_size": 14, "hidden_size": 1024,
                                          "num_hidden_layers": 24, "num_attention_heads": 16,
                                          "intermediate_size": 4096, "projection_dim": 768},
}


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int
    kind: str  # "linear" (a matmul weight: quantised in 4-bit), "bias", "norm", "embed", "head"


@dataclass(frozen=True)
class LMShape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    kv_heads: int
    source: str  # where the shape was read: "config.json of DIR", "built-in facts of microsoft/phi-2", ...
    live_vocab: int | None = None  # ids the head scores when the others are pinned (a bundled base says how many)

    @property
    def head_ids(self) -> int:
        return self.live_vocab or self.vocab

    def linears(self) -> dict[str, tuple[int, int]]:
        """Per decoder layer: module name -> (in, out) features (Phi: attention q/k/v/dense, MLP fc1/fc2)."""
        h, kv = self.hidden, self.hidden // self.heads * self.kv_heads
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "dense": (h, h),
                "fc1": (h, self.intermediate), "fc2": (self.intermediate, h)}

    def tensors(self) -> list[Tensor]:
        """Every parameter of ``PhiForCausalLM`` (every linear has a bias; one LayerNorm per layer; the head
        has a bias; embeddings untied)."""
        out = [Tensor("embed_tokens", self.vocab * self.hidden, "embed")]
        for i in range(self.layers):
            out.append(Tensor(f"layers.{i}.input_layernorm", 2 * self.hidden, "norm"))
            for name, (a, b) in self.linears().items():
                out += [Tensor(f"layers.{i}.{name}.weight", a * b, "linear"),
                        Tensor(f"layers.{i}.{name}.bias", b, "bias")]
        out += [Tensor("final_layernorm", 2 * self.hidden, "norm"),
                Tensor("lm_head.weight", self.vocab * self.hidden, "head"), Tensor("lm_head.bias", self.vocab, "bias")]
        return out

    def params(self) -> int:
        return sum(t.numel for t in self.tensors())

    def layer_params(self) -> int:
        return sum(a * b + b for a, b in self.linears().values()) + 2 * self.hidden

    def lora_params(self, r: int, targets: list[str]) -> int:
        known = self.linears()
        unknown = sorted(set(targets) - set(known))
        if unknown:
            raise MmphiError(f"LoRA targets {', '.join(unknown)} are not Phi modules ({', '.join(known)})")
        return self.layers * sum(r * (known[t][0] + known[t][1]) for t in targets)


def lm_shape_from(config: dict[str, Any], source: str, live_vocab: int | None = None) -> LMShape:
    kind = config.get("model_type", "phi")
    if kind != "phi":
        raise MmphiError(f"the dry run plans Phi-architecture LMs (model_type 'phi'); {source} is {kind!r}")
    c = {**PHI_DEFAULTS, **config}
    return LMShape(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c["intermediate_size"], c["num_key_value_heads"] or c["num_attention_heads"], source, live_vocab)


def _config_file(source: str) -> Path | None:
    try:
        folder = Path(resolve_model(source))
    except MmphiError:
        return None
    for candidate in (folder / "config.json", folder / "lm" / "config.json"):  # a stage-1 final/ holds lm/
        if candidate.is_file():
            return candidate
    return None


def lm_shape(source: str) -> LMShape:
    """The LM of ``source`` (a folder, a bundled name or a hub id this module knows), from its config only."""
    file = _config_file(source)
    if file is not None:
        live = (bundle_facts(str(file.parent)) or {}).get("live_vocab")
        where = f"config.json of {file.parent}" + (f"; its head scores {live} live ids (bundle.json)" if live else "")
        return lm_shape_from(json.loads(file.read_text()), where, live)
    if source in KNOWN_LMS:
        return lm_shape_from(KNOWN_LMS[source], f"built-in facts of {source}")
    raise MmphiError(f"no config for the LM {source!r} without the network: pass a local model folder, or one of "
                     f"{', '.join(KNOWN_LMS)}")


def vision_shape(source: str) -> tuple[dict[str, Any], str]:
    """(vision_config fields, where they were read) of a CLIP vision tower."""
    file = _config_file(source)
    if file is not None:
        cfg = json.loads(file.read_text())
        return cfg.get("vision_config", cfg), f"config.json of {file.parent}"
    if source in KNOWN_VISION:
        return KNOWN_VISION[source], f"built-in facts of {source}"
    raise MmphiError(f"no config for the vision encoder {source!r} without the network: pass a local folder, or "
                     f"one of {', '.join(KNOWN_VISION)}")


def patch_features(vision: dict[str, Any], mode: str = "patch") -> tuple[int, int]:
    """(tokens, width) of the features ``mmphi embed`` stores: patch tokens (CLS dropped) or one pooled vector."""
    if mode == "pooled":
        return 1, int(vision.get("projection_dim", 512))
    return (int(vision["image_size"]) // int(vision["patch_size"])) ** 2, int(vision["hidden_size"])


def projector_tensors(kind: str, in_dim: int, out_dim: int, positions: int = 0, hidden: int = 0,
                      tokens_per_feature: int = 1) -> list[int]:
    """Parameter sizes, tensor by tensor, of ``mmphi.mm.projector.build_projector`` with these arguments."""
    width, out = hidden or out_dim, out_dim * tokens_per_feature
    shapes = {"linear": [in_dim * out, out],
              "mlp2x_gelu": [in_dim * width, width, width * out, out],
              "resblock": [in_dim * out, out, out, out, out * out, out, out * out, out],
              "geglu": [in_dim * width, width, in_dim * width, width, width * out, out]}
    if kind not in shapes:
        raise MmphiError(f"unknown projector kind {kind!r}")
    return shapes[kind] + ([positions * in_dim] if positions else [])


def clip_tower_params(c: dict[str, Any], text: bool) -> int:
    """One tower of ``CLIPModel``: embeddings, encoder layers (q/k/v/out + MLP, two LayerNorms), final norms."""
    h, i = c["hidden_size"], c["intermediate_size"]
    layers = c["num_hidden_layers"] * (4 * (h * h + h) + h * i + i + i * h + h + 4 * h)
    if text:
        return c["vocab_size"] * h + c["max_position_embeddings"] * h + layers + 2 * h
    patches = (c["image_size"] // c["patch_size"]) ** 2
    return 3 * c["patch_size"] ** 2 * h + h + (patches + 1) * h + 2 * h + layers + 2 * h
