from __future__ import annotations

import dataclasses

import pytest

from mmphi.cli import VERBS, main


def test_top_level_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


@pytest.mark.parametrize("verb", list(VERBS))
def test_verb_help_documents_every_field(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert "--recipe" in out
    for f in dataclasses.fields(VERBS[verb].config_class()):
        shown = f.name.upper() if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
        assert shown in out, f"--help of {verb} misses {f.name}"


def test_bad_flag_value_is_a_clear_error(capsys):
    assert main(["world", "--scenes", "lots"]) == 2
    assert "scenes: cannot read 'lots'" in capsys.readouterr().err


def test_unknown_recipe_is_a_clear_error(capsys):
    assert main(["world", "--recipe", "huge"]) == 2
    assert "unknown recipe 'huge'" in capsys.readouterr().err
