from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import PhiForCausalLM

from mmphi.config import build, load_recipe
from mmphi.lm.config import PHI2_ARCH, PretrainConfig
from mmphi.lm.model import CausalLMLoss, count_params, live_vocab, phi_config, pin_vocab
from mmphi.tokenizer import build_offline_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_offline_tokenizer()


def test_phi2_recipe_matches_microsoft_phi2_without_allocating(tok):
    cfg = build(PretrainConfig, load_recipe("phi2")["pretrain"], {"data": "x"})
    arch = phi_config(cfg.model, tok)
    for key, value in PHI2_ARCH.items():
        got = arch.rope_parameters[key] if key in ("partial_rotary_factor", "rope_theta") else getattr(arch, key)
        assert got == value, key
    counts = count_params(arch)  # on the meta device: no memory
    assert abs(counts["total"] - 2.7797e9) / 2.7797e9 < 1e-3


def test_tiny_recipe_keeps_phi2_token_ids(tok):
    cfg = build(PretrainConfig, load_recipe("tiny")["pretrain"], {"data": "x"})
    arch = phi_config(cfg.model, tok)
    assert arch.vocab_size == 51200 and arch.model_type == "phi"
    assert arch.eos_token_id == tok.eos_token_id == 50256


def test_pinned_model_full_vocab_loss_equals_live_vocab_loss(tok):
    torch.manual_seed(0)
    arch = phi_config({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "intermediate_size": 64, "max_position_embeddings": 64}, tok)
    lm = PhiForCausalLM(arch)
    ids = torch.tensor(tok(["the red circle is on the left", "a blue square at the top"]).input_ids[0][:6])[None]
    keep = torch.from_numpy(np.union1d(ids.numpy(), [50256]))
    pin_vocab(lm, keep)
    assert torch.equal(live_vocab(lm), keep)
    module = CausalLMLoss(lm, keep)
    trainable = [p for p in module.parameters() if p.requires_grad]
    # The full-vocabulary rows are frozen: only compact copies of the live rows train.
    assert sum(p.numel() for p in trainable) < sum(p.numel() for p in lm.parameters()) / 2
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(5):
        module(ids).backward()
        opt.step()
        opt.zero_grad()
    live = module(ids)
    exported = module.export()
    full = F.cross_entropy(exported(input_ids=ids[:, :-1]).logits[0], ids[0, 1:])
    assert torch.allclose(live, full, atol=1e-5)
    # And sampling from the plain model never yields a pinned id.
    out = lm.generate(ids[:, :2], max_new_tokens=20, do_sample=True, pad_token_id=50256)
    assert set(out[0].tolist()) <= set(keep.tolist())


def test_loaded_lms_run_gelu_new_fused_with_the_same_outputs(tmp_path):
    from helpers import make_lm
    from transformers import AutoModelForCausalLM
    from transformers.activations import NewGELUActivation

    from mmphi.lm.loading import load_causal_lm

    path = make_lm(tmp_path / "lm")
    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.randint(0, 50000, (2, 12))
    for quantize in (False, True):
        lm = load_causal_lm(str(path), quantize=quantize).eval()
        acts = [m for m in lm.modules() if isinstance(m, (NewGELUActivation, torch.nn.GELU))]
        assert len(acts) == 2 and all(isinstance(m, torch.nn.GELU) and m.approximate == "tanh" for m in acts)
        if not quantize:
            with torch.no_grad():
                assert torch.allclose(lm(ids).logits, plain(ids).logits, atol=1e-5)
            lm.save_pretrained(tmp_path / "again")  # the saved model is still a plain Phi with gelu_new
            assert PhiForCausalLM.from_pretrained(tmp_path / "again").config.hidden_act == "gelu_new"
