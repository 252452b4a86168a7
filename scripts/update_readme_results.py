"""Copy the results block of a demo report into README.md (between the results markers), with its charts.

    .venv/bin/python scripts/update_readme_results.py runs/demo

Charts and example images the block links to are copied to docs/results/ so the README shows them
from a clean checkout; the numbers are the report's own (never typed by hand).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
ROOT = Path(__file__).resolve().parents[1]


def main(run: Path) -> None:
    report = (run / "report.md").read_text()
    block = report[report.index(START): report.index(END) + len(END)]
    dest = ROOT / "docs" / "results"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)

    def relink(match: re.Match) -> str:
        src = run / match.group(2)
        if not src.exists():
            return match.group(0)
        target = dest / match.group(2).replace("/", "_")
        shutil.copy(src, target)
        return f"{match.group(1)}({target.relative_to(ROOT)})"

    block = re.sub(r"(!?\[[^\]]*\])\(([^)]+\.png)\)", relink, block)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text:
        raise SystemExit(f"README.md has no {START} ... {END} section to replace")
    text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    readme.write_text(text)
    print(f"README.md results updated from {run / 'report.md'}; charts in {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))
