"""The multimodal model: projectors, the splice, head-where-the-loss-is, a second LM architecture."""

from __future__ import annotations

import pytest
import torch
from transformers import Phi3Config, Phi3ForCausalLM, PhiConfig, PhiForCausalLM

from mmphi.mm.data import ChatEncoder, collate
from mmphi.mm.model import MultimodalLM, lora_targets
from mmphi.mm.projector import KINDS, build_projector
from mmphi.tokenizer import build_offline_tokenizer

D_VIS, N_IMG = 12, 3


@pytest.fixture(scope="module")
def tok():
    return build_offline_tokenizer()


def tiny_phi() -> PhiForCausalLM:
    torch.manual_seed(0)
    return PhiForCausalLM(PhiConfig(vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=128, pad_token_id=50256,
                                    eos_token_id=50256, bos_token_id=50256))


def tiny_phi3() -> Phi3ForCausalLM:
    torch.manual_seed(0)
    return Phi3ForCausalLM(Phi3Config(vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                                      pad_token_id=50256, eos_token_id=50256, bos_token_id=50256))


class MemStore:
    path = "memory"

    def __init__(self):
        gen = torch.Generator().manual_seed(1)
        self.data = {k: torch.randn(N_IMG, D_VIS, generator=gen) for k in ("a", "b")}

    def __contains__(self, key):
        return key in self.data

    def get_many(self, keys):
        return torch.stack([self.data[k] for k in keys])


def _batch(tok):
    enc = ChatEncoder(tok, N_IMG)
    exs = [enc.encode([("<image>\nWhat colour is it?", "red"), ("And now?", "blue")], "a"),
           enc.encode([("Hello", "hi there")], None),
           enc.encode([("Count them.\n<image>", "two")], "b")]
    return collate(exs, enc.pad_id, MemStore())


@pytest.mark.parametrize("kind", KINDS)
def test_projector_kinds_map_shapes(kind):
    proj = build_projector(kind, D_VIS, 32)
    assert proj(torch.randn(2, N_IMG, D_VIS)).shape == (2, N_IMG, 32)
    with pytest.raises(ValueError, match="unknown projector"):
        build_projector("conv", D_VIS, 32)


def test_position_codes_make_the_same_patch_differ_by_place_and_not_additively():
    torch.manual_seed(0)
    proj = build_projector("mlp2x_gelu", D_VIS, 32, positions=N_IMG, hidden=64)
    assert proj.base[0].out_features == 64  # the hidden width is configurable
    a, b = torch.randn(D_VIS), torch.randn(D_VIS)
    # The same two patch contents at every position: outputs differ by position ...
    out_a = proj(a.expand(1, N_IMG, D_VIS))[0]
    out_b = proj(b.expand(1, N_IMG, D_VIS))[0]
    assert not torch.allclose(out_a[0], out_a[1], atol=1e-4)
    # ... and the position's effect depends on the content (a joint code, not content + position).
    assert not torch.allclose(out_a[0] - out_a[1], out_b[0] - out_b[1], atol=1e-4)


def test_several_tokens_per_feature_keep_each_patch_phrase_together(tok):
    torch.manual_seed(0)
    k = 3
    proj = build_projector("mlp2x_gelu", D_VIS, 32, positions=N_IMG, hidden=64, tokens_per_feature=k)
    feats = torch.randn(2, N_IMG, D_VIS)
    out = proj(feats)
    assert out.shape == (2, N_IMG * k, 32)
    # Changing one patch changes exactly its own k consecutive tokens.
    changed = feats.clone()
    changed[1, 1] = torch.randn(D_VIS)
    moved = (proj(changed) - out).abs().sum(-1) > 1e-6
    assert moved[0].sum() == 0
    assert moved[1].tolist() == [i // k == 1 for i in range(N_IMG * k)]
    # The LM gets N * k image tokens per image: the placeholders must match.
    model = MultimodalLM(tiny_phi(), proj, {"image_tokens": N_IMG * k})
    enc = ChatEncoder(tok, N_IMG * k)
    batch = collate([enc.encode([("<image>\nWhat is it?", "red")], "a")], enc.pad_id, MemStore())
    embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["features"])
    assert torch.allclose(embeds[0][batch["image_mask"][0]], proj(batch["features"])[0])
    short = ChatEncoder(tok, N_IMG)
    bad = collate([short.encode([("<image>\nWhat is it?", "red")], "a")], short.pad_id, MemStore())
    with pytest.raises(ValueError, match="placeholder positions but"):
        model.embed(bad["input_ids"], bad["image_mask"], bad["features"])
    with pytest.raises(ValueError, match="tokens_per_feature"):
        build_projector("linear", D_VIS, 32, tokens_per_feature=0)


def test_splice_puts_each_image_at_its_placeholders(tok):
    model = MultimodalLM(tiny_phi(), build_projector("linear", D_VIS, 32), {"image_tokens": N_IMG})
    batch = _batch(tok)
    embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["features"])
    proj = model.projector(batch["features"])
    assert torch.allclose(embeds[0][batch["image_mask"][0]], proj[0])
    assert torch.allclose(embeds[2][batch["image_mask"][2]], proj[1])
    text = model.lm.get_input_embeddings()(batch["input_ids"])
    assert torch.equal(embeds[~batch["image_mask"]], text[~batch["image_mask"]])
    with pytest.raises(ValueError, match="placeholder positions but"):
        model.embed(batch["input_ids"], batch["image_mask"], batch["features"][:1])


def test_a_text_only_batch_still_reaches_the_trained_projector_with_zero_weight(tok):
    """Modality grouping makes whole batches without an image; DDP needs every trainable parameter in every
    backward, so the projector runs on a zero image into a term of weight 0 (the loss is unchanged)."""
    spec = {"image_tokens": N_IMG, "projector": {"kind": "linear", "in_dim": D_VIS, "out_dim": 32}}
    model = MultimodalLM(tiny_phi(), build_projector("linear", D_VIS, 32), spec).train()
    enc = ChatEncoder(tok, N_IMG)
    batch = collate([enc.encode([("Hello", "hi there")], None), enc.encode([("Say two", "two")], None)], enc.pad_id)
    loss = model(**batch)
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.projector.parameters())
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch), loss.detach())  # eval runs no dummy: the same loss


@pytest.mark.parametrize("make_lm", [tiny_phi, tiny_phi3])
def test_loss_on_answer_positions_equals_the_full_lm_loss(tok, make_lm):
    model = MultimodalLM(make_lm(), build_projector("mlp2x_gelu", D_VIS, 32), {"image_tokens": N_IMG})
    batch = _batch(tok)
    ours = model(**batch)
    embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["features"])
    reference = model.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("make_lm", [tiny_phi, tiny_phi3])
def test_lora_on_both_architectures_learns_and_generates_from_embeddings(tok, make_lm):
    from peft import LoraConfig, get_peft_model

    lm = make_lm()
    targets = lora_targets(lm.config.model_type)
    lm = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
    model = MultimodalLM(lm, build_projector("linear", D_VIS, 32).requires_grad_(False), {"image_tokens": N_IMG})
    trainable = {n.split(".lora_")[0].split(".")[-1] for n, p in model.named_parameters()
                 if p.requires_grad and "lora_" in n}
    assert trainable == set(targets)
    batch = _batch(tok)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    first = float(model(**batch).detach())
    for _ in range(30):
        loss = model(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    # A random tiny head (std 0.02) bounds how far logits can move: ~0.3 nats is about the most
    # the adapters alone (the projector is frozen here) can take off ln(V).
    assert float(loss) < first - 0.2
    embeds = model.embed(batch["input_ids"][:1], batch["image_mask"][:1], batch["features"][:1])
    out = model.lm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"][:1], max_new_tokens=3,
                            do_sample=False, pad_token_id=50256)
    assert out.shape[1] <= 3


def test_unknown_architecture_needs_explicit_targets():
    with pytest.raises(Exception, match="lora-targets"):
        lora_targets("gpt_neox")
    assert lora_targets("gpt_neox", ["query_key_value"]) == ["query_key_value"]


def test_gradient_checkpointing_gives_the_same_gradients(tok):
    batch = _batch(tok)
    grads = []
    for checkpointing in (False, True):
        model = MultimodalLM(tiny_phi(), build_projector("linear", D_VIS, 32), {"image_tokens": N_IMG})
        model.lm.requires_grad_(False)  # stage 1: only the projector trains, through the frozen LM
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.lm.model.gradient_checkpointing
        model.train()
        model(**batch).backward()
        grads.append(model.projector.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_per_answer_loss_weights_each_answer_once(tok):
    enc = ChatEncoder(tok, N_IMG)
    long = "a very long answer with many many words in it"
    ex = enc.encode([("<image>\nQ?", "yes"), ("Describe.", long)], "a")
    batch = collate([ex], enc.pad_id, MemStore(), per_answer=True)
    weights = batch["loss_weights"][0][batch["labels"][0] != -100]
    n_short, n_long = 2, len(tok(f" {long}").input_ids) + 1  # answers plus their EOS
    assert torch.allclose(weights, torch.tensor([1 / n_short] * n_short + [1 / n_long] * n_long))
    model = MultimodalLM(tiny_phi(), build_projector("linear", D_VIS, 32), {"image_tokens": N_IMG})
    per_answer = model(**batch)
    plain = {k: v for k, v in batch.items() if k != "loss_weights"}
    per_token = model(**plain)
    # Recompute both by hand from the token losses.
    embeds = model.embed(batch["input_ids"], batch["image_mask"], batch["features"])
    logits = model.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits[0, :-1]
    targets = batch["labels"][0, 1:]
    losses = torch.nn.functional.cross_entropy(logits[targets != -100], targets[targets != -100], reduction="none")
    assert torch.allclose(per_token, losses.mean(), atol=1e-5)
    assert torch.allclose(per_answer, (losses[:n_short].mean() + losses[n_short:].mean()) / 2, atol=1e-5)
