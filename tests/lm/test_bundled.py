"""The bundled base ``mmphi/tiny-phi-base``: resolvable offline, the weights its card names, a vocabulary
that covers every word a shapes world uses, the text QA its card claims, and the command that makes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, PhiConfig, PhiForCausalLM

from mmphi.bundled import MODELS_DIR, TINY_BASE, WEIGHTS, bundle_facts, bundled_path, resolve_model, sha256_of
from mmphi.config import build, load_recipe
from mmphi.errors import MmphiError
from mmphi.lm.model import PINNED_BIAS, live_vocab, pin_vocab
from mmphi.tokenizer import EOS_ID, load_tokenizer
from mmphi.world.build import build_world
from mmphi.world.config import WorldConfig

BASE = MODELS_DIR / "tiny-phi-base"
# The one input id a world's text has that no corpus document does: the space of "USER: " before an
# image placeholder (the corpus puts a description there). It is read, never predicted.
TEMPLATE_ONLY_INPUTS = {220}


def _live_ids() -> set[int]:
    with safe_open(str(BASE / WEIGHTS), "pt") as f:
        bias = f.get_tensor("lm_head.bias")
    return set(torch.nonzero(bias > PINNED_BIAS / 2).flatten().tolist())


def test_the_bundled_name_resolves_to_the_package_folder_offline():
    assert resolve_model(TINY_BASE) == str(BASE)
    assert resolve_model("microsoft/phi-2") == "microsoft/phi-2"  # hub ids pass through untouched
    with pytest.raises(MmphiError, match="tiny-phi-base"):
        resolve_model("mmphi/no-such-model")
    lm = AutoModelForCausalLM.from_pretrained(resolve_model(TINY_BASE))
    assert isinstance(lm, PhiForCausalLM) and lm.config.vocab_size == 51200
    assert load_tokenizer(TINY_BASE).eos_token_id == EOS_ID


def test_the_weights_are_the_ones_the_model_card_names():
    facts = bundle_facts(TINY_BASE)
    assert facts is not None and sha256_of(bundled_path(TINY_BASE) / facts["weights"]) == facts["sha256"]
    card = (BASE / "README.md").read_text()
    assert facts["sha256"] in card and facts["command"] in card
    assert len(_live_ids()) == facts["live_vocab"]


def test_the_clone_stays_small_rows_outside_the_live_vocabulary_are_zero():
    with safe_open(str(BASE / WEIGHTS), "pt") as f:
        embed = f.get_tensor("model.embed_tokens.weight")
        head = f.get_tensor("lm_head.weight")
    dead = torch.ones(embed.shape[0], dtype=torch.bool)
    dead[sorted(_live_ids())] = False
    assert int(dead.sum()) > 50_000
    assert not embed[dead].any() and not head[dead].any()


def _world_ids(world, tok) -> tuple[set[int], set[int]]:
    """(ids the LM reads, ids it must predict) over a world's corpus, captions and conversations, encoded
    the way stages 1 and 2 encode them."""
    from mmphi.mm.data import ChatEncoder, caption_examples, llava_examples

    enc = ChatEncoder(tok, 4, "", 512)
    read, predicted = set(), set()
    for split in ("train", "val", "test"):
        corpus = tok((world / split / "corpus.txt").read_text(), add_special_tokens=False).input_ids
        read |= set(corpus)
        predicted |= set(corpus)
        for ex in [*caption_examples(world / split / "captions.json", enc),
                   *llava_examples(world / split / "instruct.json", enc)[0]]:
            read |= {i for i, m in zip(ex.input_ids, ex.image_mask, strict=True) if not m}
            predicted |= {i for i in ex.labels if i >= 0}
    return read, predicted


def test_a_freshly_generated_world_uses_no_id_outside_the_base_vocabulary(tmp_path):
    # The tiny recipe's world (the demo's) with a seed of its own: every word it can say is one the base knows.
    settings = load_recipe("tiny")["world"]
    world = tmp_path / "w"
    build_world(build(WorldConfig, settings, {"out": str(world), "seed": 2027, "scenes": 400, "corpus_scenes": 400,
                                              "speech": 0}))
    tok = load_tokenizer(TINY_BASE)
    read, predicted = _world_ids(world, tok)
    live = _live_ids()
    assert not predicted - live, [tok.decode([i]) for i in predicted - live]
    assert not read - live - TEMPLATE_ONLY_INPUTS, [tok.decode([i]) for i in read - live - TEMPLATE_ONLY_INPUTS]


@torch.no_grad()
def test_compacting_zeroes_dead_rows_and_keeps_every_live_logit():
    from mmphi.lm.base import compact_weights

    torch.manual_seed(0)
    lm = PhiForCausalLM(PhiConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)).eval()
    live = torch.tensor([3, 7, 11, 250, 299])
    pin_vocab(lm, live)
    ids = live[torch.tensor([[0, 1, 2, 3, 4, 0]])]
    before = lm(input_ids=ids).logits
    assert compact_weights(lm) == len(live)
    after = lm(input_ids=ids).logits
    assert torch.allclose(before[..., live], after[..., live])
    assert torch.equal(live_vocab(lm), live)
    dead = torch.ones(300, dtype=torch.bool)
    dead[live] = False
    assert not lm.lm_head.weight[dead].any() and not lm.model.embed_tokens.weight[dead].any()
    with pytest.raises(ValueError, match="no pinned vocabulary"):
        compact_weights(PhiForCausalLM(lm.config))


def test_a_text_only_assistant_loads_the_bundled_name(tmp_path):
    from mmphi.infer.assistant import Assistant

    bot = Assistant.load(TINY_BASE, device=torch.device("cpu"))
    assert not bot.multimodal and bot.source == TINY_BASE


@pytest.mark.slow
def test_the_base_answers_text_questions_on_a_world_it_never_saw(tmp_path):
    from mmphi.lm.textqa import text_qa_accuracy

    settings = load_recipe("tiny")["world"]
    world = tmp_path / "fresh"
    build_world(build(WorldConfig, settings, {"out": str(world), "seed": 31337, "scenes": 4000, "corpus_scenes": 0,
                                              "speech": 0}))
    lm = AutoModelForCausalLM.from_pretrained(resolve_model(TINY_BASE))
    acc = text_qa_accuracy(lm, load_tokenizer(TINY_BASE), world / "val", 600)["accuracy"]
    assert acc["overall"]["n"] == 600
    assert acc["overall"]["accuracy"] >= 0.95, acc


@pytest.mark.slow
def test_the_command_that_makes_the_base_reproduces_it_at_a_small_step_count(tmp_path):
    from mmphi.cli import main

    out = tmp_path / "base"
    assert main(["base", "--out", str(out), "--max-steps", "30", "--scenes", "300", "--corpus-scenes", "300",
                 "--extend-to", "40", "--check-scenes", "300", "--check-questions", "20"]) == 0
    model = out / "model"
    facts = json.loads((model / "bundle.json").read_text())
    assert facts["training"]["phases"] == [30, 40] and facts["world"]["seed"] == 1  # the recipe's world, its steps
    assert facts["command"] == "mmphi base --max-steps 30 --extend-to 40 --scenes 300 --corpus-scenes 300"
    assert sha256_of(model / WEIGHTS) == facts["sha256"] and facts["sha256"] in (model / "README.md").read_text()
    assert facts["loss"]["final_val_loss"] < facts["loss"]["initial_loss"]
    lm = PhiForCausalLM.from_pretrained(model)
    corpus = np.fromfile(out / "pretrain" / "data" / "train.bin", dtype=np.uint16)
    assert facts["live_vocab"] == len(live_vocab(lm)) == len(set(corpus.tolist()) | {EOS_ID})
    assert {"train", "val"} <= set(json.loads((model / "curve.json").read_text()))
    # Run again: the world and the finished stage 0 are reused, the folder rewritten the same way.
    drawn = (out / "world" / "world.json").stat().st_mtime_ns
    assert main(["base", "--out", str(out), "--max-steps", "30", "--scenes", "300", "--corpus-scenes", "300",
                 "--extend-to", "40", "--check-scenes", "300", "--check-questions", "20"]) == 0
    assert json.loads((model / "bundle.json").read_text())["sha256"] == facts["sha256"]
    assert (out / "world" / "world.json").stat().st_mtime_ns == drawn  # not drawn again
