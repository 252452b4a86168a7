"""The model card (README.md) of a bundled base, written from its ``bundle.json`` facts."""

from __future__ import annotations

from mmphi.common.tables import accuracy_table


def _qa_table(qa: dict) -> str:
    return accuracy_table({"all": qa["accuracy"], **qa.get("by_objects", {})})


def _phases(phases: list[int]) -> str:
    if len(phases) < 2:
        return ""
    return (f"; in two phases: {phases[0]:,} steps, then resumed to {phases[1]:,} with the cosine stretched to the "
            "new end (the rate warms back up to where the longer schedule stands, then decays again)")


def model_card(f: dict) -> str:
    t, loss, world = f["training"], f["loss"], f["world"]
    settings = world["settings"]
    own, fresh = f["text_qa"]["own_val"], f["text_qa"]["fresh_val"]
    arch = t["model"]
    lines = [
        "---", "library_name: transformers", "license: mit", "pipeline_tag: text-generation",
        "tags: [phi, mmphi, shapes-world]", "---", "",
        f"# {f['name']}", "",
        f"A tiny Phi (`PhiForCausalLM`: hidden {arch.get('hidden_size')}, {arch.get('num_hidden_layers')} layers, "
        f"{arch.get('num_attention_heads')} heads, Phi-2's 51,200-id embedding) pretrained from scratch by mmphi on "
        "the text of the synthetic shapes world. It is the language model under the `tiny` recipe's stages 1-2, "
        "as `microsoft/phi-2` is under the `phi2` recipe's, and it ships inside the mmphi package: recipes and "
        f"flags name it `{f['name']}` (`--lm {f['name']}`), which resolves to this folder offline.", "",
        "## Reproduce", "",
        "```bash", f"{f['command']} --out runs/base      # writes runs/base/model/, a folder like this one",
        f"{f['command']} --out runs/base --into mmphi/models/{f['name'].split('/', 1)[1]}   # replace the bundled one",
        "```", "",
        f"Recipe `{f['recipe']}` (`configs/{f['recipe']}.yaml`), mmphi commit `{f.get('mmphi_commit')}`. Stage 0 "
        "runs through `torch.compile`, whose runs do not repeat bit for bit (two 40-step runs differed by up to 5e-7 "
        "in loss): a rerun trains the same way on the same data but does not give these bytes.", "",
        "## Data", "",
        f"- its own shapes world, seed {world['seed']}: {settings['scenes']:,} scenes (train/val/test "
        f"{'/'.join(str(v) for v in world['splits'].values())}) and {settings['corpus_scenes']:,} extra text-only "
        f"corpus scenes; {settings['corpus_rounds'][0]}-{settings['corpus_rounds'][1]} question rounds per document, "
        f"{settings['corpus_descriptions']} descriptions, a caption round in {settings.get('corpus_captions', 0):.0%} "
        "of the documents",
        f"- {f['corpus']['train_tokens']:,} train tokens, {f['corpus']['val_tokens']:,} val tokens",
        "- the corpus holds train-split scenes only: a scene's split is a hash of its objects, the same in every "
        "world, so no val or test scene of any shapes world (the demo's included) is in it",
        "",
        "## Training", "",
        f"- {t['steps']:,} steps of {t['batch_size']} x {t['seq_len']} tokens ({t['tokens']:,} tokens), AdamW, "
        f"peak lr {t['lr']}, cosine schedule, seed {t['seed']}" + _phases(t.get("phases", [])),
        f"- {t['minutes']} minutes on {t['machine']}",
        f"- live vocabulary: {f['live_vocab']} ids (the ids the corpus uses); the head is trained on those only",
        f"- initial val loss {loss['initial_loss']:.3f} (over the live ids; {loss['initial_loss_full_vocab']:.3f} "
        f"over all 51,200), initial - 1 reached at step {loss['step_reached_target']}, final val loss "
        f"{loss['final_val_loss']:.3f}",
        "", "![loss curve](loss.png)", "",
        "## Text QA: questions about a scene described in words", "",
        "Greedy answers to held-out single questions, with the scene's description where an image would stand. "
        "By type, and by the number of objects in the scene (with more than one object, the question names one "
        "object by one attribute and asks for another: the binding a multimodal model needs).", "",
        f"Its own world's val split (seed {own['seed']}):", "", _qa_table(own), "",
        f"A fresh world's val split (seed {fresh['seed']}, never used for anything else):", "", _qa_table(fresh), "",
        "## Weights", "",
        f"- `{f['weights']}` sha256 `{f['sha256']}` (checked by the test suite against `bundle.json`)",
        f"- embedding and head rows of the {51200 - f['live_vocab']:,} ids outside the live vocabulary are zero and "
        "their head bias is pinned at -1e4: the model is a plain 51,200-id `PhiForCausalLM` that never emits them, "
        "and the zero rows cost almost nothing in git",
        "- `curve.json`: the loss curve as numbers (train and val loss by step), which `mmphi demo` plots beside "
        "its own from-scratch run",
        "",
    ]
    return "\n".join(lines)
