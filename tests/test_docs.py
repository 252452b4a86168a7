"""The docs stay true to the CLI: every ``mmphi`` command in a shell block parses with the CLI's own parser.

Also: the README stays short, and every relative link in the README, CONTRIBUTING.md and docs/ points to a
file that exists (and to a heading that exists, when it names one). Commands are parsed, never run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmphi.cli import VERBS, _parser, _peek_recipe
from mmphi.config import ConfigError, from_args, load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 210
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>|\.\.\.|…")


def doc_files() -> list[Path]:
    files = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [f for f in files if f.is_file()]


@dataclass(frozen=True)
class Command:
    where: str  # "FILE:LINE"
    argv: tuple[str, ...] | None  # the arguments after `mmphi` (None: a placeholder, not checked)
    text: str


def shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, logical line) of every shell code block, continuations (``\\``) joined."""
    out: list[tuple[int, str]] = []
    fence: str | None = None  # the open fence's language, None outside a fence
    pending, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip().lower() if fence is None else None
            pending = ""
            continue
        if fence is None or fence not in SHELL_FENCES:
            continue
        if not pending:
            start = n
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((start, pending + stripped))
        pending = ""
    return out


def _mmphi_argv(words: list[str]) -> list[str] | None:
    """The arguments after the mmphi command in one simple command, or None if it runs something else."""
    while words and ENV_ASSIGNMENT.match(words[0]):  # FOO=1 mmphi ...
        words = words[1:]
    if words and words[0] in ("/usr/bin/time", "time"):
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    if words and Path(words[0]).name == "mmphi":  # mmphi, .venv/bin/mmphi
        return words[1:]
    for i in range(len(words) - 1):  # python -m mmphi.cli ..., accelerate launch ... -m mmphi.cli ...
        if words[i] == "-m" and words[i + 1] == "mmphi.cli":
            return words[i + 2:]
    return None


def commands_in(text: str, name: str) -> list[Command]:
    found = []
    for n, line in shell_lines(text):
        words = shlex.split(line, comments=True)
        segments: list[list[str]] = [[]]
        for w in words:
            if w in SEPARATORS:
                segments.append([])
            else:
                segments[-1].append(w)
        for seg in segments:
            argv = _mmphi_argv(seg)
            if argv is None:
                continue
            placeholder = any(PLACEHOLDER.search(w) for w in argv)
            found.append(Command(f"{name}:{n}", None if placeholder else tuple(argv), line))
    return found


def all_commands() -> list[Command]:
    return [c for f in doc_files() for c in commands_in(f.read_text(), f.relative_to(ROOT).as_posix())]


def parse_command(argv: list[str]):
    """Parse (never run) a command line the way ``mmphi.cli.main`` does, down to the settings object."""
    verb = next((a for a in argv if not a.startswith("-")), None)
    assert verb in VERBS, f"unknown verb {verb!r}"
    recipe_name = _peek_recipe(argv, VERBS[verb].recipe)
    if recipe_name.endswith((".yaml", ".yml")) and not (ROOT / recipe_name).exists():
        recipe_name = VERBS[verb].recipe  # an example recipe file the docs show how to write
    recipe = load_recipe(recipe_name)
    try:
        args = _parser(verb, recipe).parse_args(argv)
    except SystemExit as err:
        raise AssertionError(f"argparse rejected it (exit {err.code}); see the captured stderr") from None
    return from_args(VERBS[verb].config_class(), recipe, verb, args)


COMMANDS = all_commands()
CHECKED = [c for c in COMMANDS if c.argv is not None]


def test_the_docs_hold_commands_to_check():
    assert len(CHECKED) >= 30
    readme = [c for c in CHECKED if c.where.startswith("README.md:")]
    assert ("demo",) in [c.argv for c in readme]  # the quick start's `.venv/bin/mmphi demo`


@pytest.mark.parametrize("command", CHECKED, ids=[c.where for c in CHECKED])
def test_every_documented_command_parses(command):
    try:
        parse_command(list(command.argv))
    except ConfigError as err:
        raise AssertionError(f"{command.where}: {command.text}\n  {err}") from None


def test_the_extractor_joins_continuations_and_drops_comments_and_placeholders():
    text = "\n".join([
        "```bash",
        "mmphi embed --images a.json \\",
        "            --out feats          # appends",
        "bash scripts/setup.sh && .venv/bin/mmphi demo   # then the demo",
        "OMP_NUM_THREADS=1 accelerate launch --num_processes 2 -m mmphi.cli pretrain --data <DIR>",
        "/usr/bin/time -v .venv/bin/mmphi world --out W",
        "pip install 'mmphi[data]'",
        "```",
        "```text",
        "mmphi pretrain (Phi architecture, from scratch)",
        "```",
    ])
    got = commands_in(text, "x.md")
    assert [(c.where, c.argv) for c in got] == [
        ("x.md:2", ("embed", "--images", "a.json", "--out", "feats")),
        ("x.md:4", ("demo",)),
        ("x.md:5", None),
        ("x.md:6", ("world", "--out", "W")),
    ]


def test_a_wrong_flag_fails_the_check():
    with pytest.raises(AssertionError):
        parse_command(["world", "--sceens", "10"])
    with pytest.raises(ConfigError):
        parse_command(["world", "--scenes", "lots"])


def test_the_readme_stays_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail into docs/ (at most {MAX_README_LINES})"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`[^`]*`")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    keep, fence = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            keep.append(CODE_SPAN.sub("", line))
    return "\n".join(keep)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in _prose(path.read_text()).splitlines() if line.startswith("#")}


def broken_links(path: Path) -> list[str]:
    bad = []
    for target in LINK.findall(_prose(path.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    return bad


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files_that_exist(doc):
    assert broken_links(doc) == []


def test_the_link_check_sees_a_missing_file(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n[ok](#top) [gone](nowhere.md) `[code](ignored.md)`\n")
    assert broken_links(tmp_path / "a.md") == ["nowhere.md (no such file)"]
