from __future__ import annotations

import dataclasses

import pytest

from mmphi.cli import VERBS
from mmphi.config import ConfigError, TrainArgs, build, load_recipe, recipe_names, required_fields
from mmphi.world.config import WorldConfig


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_parses_into_every_verb_config(name):
    recipe = load_recipe(name)
    assert set(recipe) - {"name"} <= set(VERBS), f"recipe {name} has sections for unknown verbs"
    for verb, spec in VERBS.items():
        cls = spec.config_class()
        placeholders = {name: "placeholder" for name in required_fields(cls)}
        cfg = build(cls, recipe.get(verb) or {}, placeholders)
        assert dataclasses.is_dataclass(cfg)


def test_recipes_exist():
    assert {"tiny", "phi2"} <= set(recipe_names())


def test_recipe_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("world:\n  scenes: 30\n")
    recipe = load_recipe(str(path))
    assert build(WorldConfig, recipe["world"]).scenes == 30


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(ConfigError, match="tiny"):
        load_recipe("nope")


def test_overrides_are_typed_and_validated():
    cfg = build(WorldConfig, {"scenes": 100}, {"scenes": "200", "speech": "3"})
    assert cfg.scenes == 200 and cfg.speech == 3
    with pytest.raises(ConfigError, match="scenes"):
        build(WorldConfig, {"scenes": "many"})
    with pytest.raises(ConfigError, match="scenes must be"):
        build(WorldConfig, {"scenes": 1})
    with pytest.raises(ConfigError, match="unknown setting 'scens'"):
        build(WorldConfig, {"scens": 1})


def test_train_args_validation():
    with pytest.raises(ConfigError, match="lr must be"):
        build(TrainArgs, {"lr": 0})
    assert build(TrainArgs, {"resume": "true"}).resume is True


def test_a_mapping_override_changes_only_the_keys_it_names():
    from mmphi.lm.config import PretrainConfig

    recipe = {"model": {"hidden_size": 128, "num_hidden_layers": 4, "nested": {"a": 1, "b": 2}}}
    cfg = build(PretrainConfig, recipe, {"data": "d", "model": '{"hidden_size": 256, "nested": {"b": 3}}'})
    assert cfg.model == {"hidden_size": 256, "num_hidden_layers": 4, "nested": {"a": 1, "b": 3}}


def test_a_recipe_extends_another_and_changes_only_what_it_names(tmp_path):
    from mmphi.lm.config import PretrainConfig

    (tmp_path / "base.yaml").write_text("world:\n  scenes: 30\n  speech: 2\npretrain:\n  model:\n    hidden_size: 64\n"
                                        "    num_hidden_layers: 2\n")
    (tmp_path / "more.yaml").write_text("extends: base.yaml\nworld:\n  scenes: 60\npretrain:\n  model:\n"
                                        "    num_hidden_layers: 3\n")
    recipe = load_recipe(str(tmp_path / "more.yaml"))
    assert recipe["name"] == "more" and "extends" not in recipe
    world = build(WorldConfig, recipe["world"])
    assert (world.scenes, world.speech) == (60, 2)
    model = build(PretrainConfig, recipe["pretrain"], {"data": "d"}).model
    assert (model["hidden_size"], model["num_hidden_layers"]) == (64, 3)
    # by name, from the packaged recipes: tiny-full is tiny with more steps
    tiny, full = load_recipe("tiny"), load_recipe("tiny-full")
    assert full["pretrain"]["model"] == tiny["pretrain"]["model"]
    assert full["pretrain"]["max_steps"] > tiny["pretrain"]["max_steps"]


def test_a_recipe_that_extends_itself_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_recipe(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("extends: 3\n")
    with pytest.raises(ConfigError, match="extends must name"):
        load_recipe(str(tmp_path / "c.yaml"))
