"""The package's layering: every part of mmphi imports only parts in the layers below it (and itself).

Low to high; a part's imports (module-level and inside functions alike) may reach any part in a lower
layer, never one in its own layer or above. A new subpackage or top-level module must be placed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmphi

LAYERS = (
    ("errors", "quiet"),
    ("config", "chat", "common", "bundled"),
    ("tokenizer", "world", "train"),
    ("lm",),
    ("vision",),
    ("audio",),  # above vision: the audio feature store is written with the image store's shard helpers
    ("mm",),
    ("infer", "plan"),
    ("eval", "serve"),
    ("demo",),
    ("cli", "__init__"),
)
LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}
ROOT = Path(mmphi.__file__).parent


def _part(path: Path) -> str:
    """The layered part a source file belongs to: its subpackage, or its own name at the top level."""
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _mmphi_imports(path: Path) -> set[str]:
    """The parts of mmphi a file imports, wherever the import statement sits."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for name in names:
            bits = name.split(".")
            if bits[0] == "mmphi" and len(bits) > 1:
                out.add(bits[1])
            elif bits[0] == "mmphi" and isinstance(node, ast.ImportFrom):  # from mmphi import x
                out.update(a.name for a in node.names)
    return out


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "models" not in p.relative_to(ROOT).parts)


def test_every_part_of_the_package_has_a_layer():
    assert sorted({_part(p) for p in _sources()} - set(LAYER_OF)) == []


def test_no_import_runs_back_up():
    upward = []
    for path in _sources():
        part = _part(path)
        for target in _mmphi_imports(path) - {part}:
            if target not in LAYER_OF or LAYER_OF[target] >= LAYER_OF[part]:
                upward.append(f"{path.relative_to(ROOT.parent)} ({part}) imports mmphi.{target}")
    assert upward == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from mmphi.eval.run import evaluate\n    import mmphi.serve.api\n")
    assert _mmphi_imports(src) == {"eval", "serve"}
