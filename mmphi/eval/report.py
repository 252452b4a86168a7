"""results.json + results.md (tables) + one bar chart per metric family, from ``mmphi eval`` results."""

from __future__ import annotations

import json
from pathlib import Path

from mmphi.common.charts import bar_chart
from mmphi.common.questions import ordered_types
from mmphi.common.tables import accuracy_table, markdown_table, pct


def _vqa_section(vqa: dict, out: Path) -> list[str]:
    lines = ["## Visual question answering (accuracy %, greedy)", "", accuracy_table(vqa), ""]
    types = [t for t in ordered_types(vqa["typed"]) if t != "overall"] + ["overall"]
    groups = {name: {t: acc[t]["accuracy"] * 100 for t in types if t in acc} for name, acc in vqa.items()
              if not name.startswith("typed (")}
    bar_chart(out / "vqa.png", "VQA accuracy by question type", groups, ylim=(0, 100))
    lines += ["![VQA accuracy](vqa.png)", ""]
    return lines


def by_objects_section(by_objects: dict, heading: str = "###") -> list[str]:
    """Typed VQA accuracy by the number of objects in the scene (see ``accuracy_by_objects``)."""
    return [f"{heading} By the number of objects in the scene (typed)", "",
            "With one object nothing needs binding; with more, a question names one object by one attribute "
            "and asks for another.", "", accuracy_table(by_objects), ""]


def _routes_section(results: dict) -> list[str]:
    """Spoken accuracy by route beside typed, on the same questions."""
    vqa, info = results["vqa"], results["speech_embed"]
    typed = vqa["typed (same questions as spoken)"]["overall"]
    rows = [["typed", "-", pct(typed["accuracy"])]]
    if "spoken" in vqa:
        rows.append(["spoken, transcript (ASR)", f"{results['asr']['wer'] * 100:.1f}% WER",
                     pct(vqa["spoken"]["overall"]["accuracy"])])
    rows.append(["spoken, embeddings (audio projector)", f"{info['tokens_per_clip']} tokens/clip, "
                 f"{info['encode_ms_per_clip']} ms/clip", pct(vqa["spoken (embeddings)"]["overall"]["accuracy"])])
    lines = ["## Speech by route", "", f"The same {info['n']} spoken questions, each asked as its typed twin was"
             + (" (after the model has described the image)." if info.get("after_describing") else "."), "",
             markdown_table(["route", "", "accuracy"], rows), ""]
    return lines


def naming_section(naming: dict, heading: str = "###") -> list[str]:
    """Position accuracy by how the question names its object (see ``position_by_naming``)."""
    columns = naming["by_objects"]
    kinds = ordered_types(k for cells in columns.values() for k in cells)
    rows = [[k, *(f"{pct(c[k]['accuracy'])} (n={c[k]['n']})" if k in c else "–" for c in columns.values())]
            for k in kinds]
    return [f"{heading} Position questions by how they name the object ({naming['condition']})", "",
            "\"Where is the red shape?\" needs the colour bound to a place through the shape word between them "
            "in a description; \"Where is the circle?\" does not.", "",
            markdown_table(["object named", *columns], rows, align="l" + "r" * len(columns)), ""]


def naming_line(naming: dict) -> str:
    """The same in one sentence: each naming overall, and on the scenes with the most objects."""
    columns = naming["by_objects"]
    most = list(columns)[-1]
    parts = []
    for kind in ordered_types(k for cells in columns.values() for k in cells if k != "overall"):
        n = sum(c[kind]["n"] for c in columns.values() if kind in c)
        right = sum(c[kind]["correct"] for c in columns.values() if kind in c)
        tail = columns[most].get(kind)
        parts.append(f"{kind} {pct(right / n)}% (n={n}" + (f"; {most}: {pct(tail['accuracy'])}%, n={tail['n']}"
                                                           if tail else "") + ")")
    return f"Position questions ({naming['condition']}) by how they name the object: " + ", ".join(parts) + "."


def _speech_section(results: dict, out: Path) -> list[str]:
    asr = results["asr"]
    vqa = results["vqa"]
    spoken, typed = vqa["spoken"]["overall"], vqa["typed (same questions as spoken)"]["overall"]
    lines = ["## Speech", "", markdown_table(
        ["spoken questions", "word error rate", "real-time factor", "accuracy spoken", "accuracy typed (same)"],
        [[asr["n"], f"{asr['wer'] * 100:.1f}%", f"{asr['real_time_factor']:.3f}", pct(spoken["accuracy"]),
          pct(typed["accuracy"])]]), ""]
    if asr.get("after_describing"):
        lines += ["Both spoken and typed questions here are answered after the model has described the image.", ""]
    lines += markdown_table(["said", "heard"], [[e["said"], e["heard"]] for e in asr["examples"]]).splitlines()
    bar_chart(out / "speech.png", "Spoken vs typed questions (same questions)",
              {"typed": {"accuracy": typed["accuracy"] * 100}, "spoken": {"accuracy": spoken["accuracy"] * 100},
               "ASR": {"word error rate": asr["wer"] * 100}}, ylabel="%", ylim=(0, 100))
    return [*lines, "", "![Speech](speech.png)", ""]


def _caption_section(cap: dict, out: Path) -> list[str]:
    lines = ["## Captions", "", markdown_table(["images", "BLEU-4", "CIDEr-D"],
                                               [[cap["n"], f"{cap['bleu4']:.3f}", f"{cap['cider']:.3f}"]]), ""]
    lines += markdown_table(["image", "generated", "a reference"],
                            [[e["image"], e["caption"], e["reference"]] for e in cap["examples"]]).splitlines()
    bar_chart(out / "captions.png", "Caption metrics", {"model": {"BLEU-4": cap["bleu4"], "CIDEr-D": cap["cider"]}},
              ylabel="score")
    return [*lines, "", "![Captions](captions.png)", ""]


def render_markdown(results: dict, out: Path) -> str:
    lines = [f"# Evaluation of `{results['model']}` on `{results['data']}`", ""]
    if "benchmark" in results:
        from mmphi.eval.benchmarks.report import benchmark_markdown

        return "\n".join(lines + benchmark_markdown(results))
    if "vqa" in results:
        lines += _vqa_section(results["vqa"], out)
    if results.get("vqa_by_objects"):
        lines += by_objects_section(results["vqa_by_objects"])
    if results.get("position_by_naming"):
        lines += naming_section(results["position_by_naming"])
    if "asr" in results:
        lines += _speech_section(results, out)
    if "speech_embed" in results:
        lines += _routes_section(results)
    if "captions" in results:
        lines += _caption_section(results["captions"], out)
    if "text_qa" in results:
        lines += ["## Questions answered from the scene described in words", "",
                  accuracy_table({"text": results["text_qa"]["accuracy"], **results["text_qa"].get("by_objects", {})}),
                  ""]
    if "perplexity" in results:
        p = results["perplexity"]
        row = [p["tokens"], f"{p['loss']:.3f}", f"{p['perplexity']:.2f}"]
        lines += ["## Language model", "", markdown_table(["test-corpus tokens", "loss", "perplexity"], [row]), ""]
    if results.get("examples"):
        lines += ["## Examples", "", markdown_table(
            ["image", "type", "question", "answer", "truth", ""],
            [[f"![](examples/{e['image']})", e["type"], e["question"], e["prediction"], e["answer"],
              "✓" if e["correct"] else "✗"] for e in results["examples"]]), ""]
    return "\n".join(lines)


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "results.md").write_text(render_markdown(results, out))
