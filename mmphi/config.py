"""Typed configuration: dataclasses filled from a YAML recipe, then from CLI flags.

Order of precedence (last wins): dataclass default -> recipe section -> command-line flag.
Every field carries a ``help`` string in its metadata; the CLI is generated from it, so
``mmphi VERB --help`` documents every field with the recipe's value as the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from mmphi.errors import MmphiError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

SettingsT = TypeVar("SettingsT", bound="DataclassInstance")  # a settings dataclass

RECIPE_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(MmphiError, ValueError):
    """A configuration value is invalid; the message names the field."""


def opt(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a help string (and a mutable default handled properly).

    ``required=True`` marks an input that no recipe can supply (e.g. ``--data``); ``__post_init__``
    still checks it, and tests that parse recipes fill it with a placeholder.
    """
    if isinstance(default, (list, dict)):
        def fresh() -> Any:  # a deep copy per instance
            return json.loads(json.dumps(default))

        return field(default_factory=fresh, metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a recipe by name (``tiny``, ``phi2``) or by path to a YAML file.

    A recipe may start from another with ``extends: NAME`` (a recipe name, or a path relative to the
    file): its sections are merged into the base's key by key, so it lists only what it changes.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = RECIPE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown recipe {str(name_or_path)!r}; known recipes: {', '.join(recipe_names())} "
                              "(or pass the path of a YAML file)")
    if not path.exists():
        raise ConfigError(f"recipe file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"recipe {path} extends itself through {' -> '.join(str(p) for p in _seen)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"recipe {path}: extends must name a recipe or a YAML file, got {base!r}")
        if Path(base).suffix in (".yaml", ".yml") and not Path(base).is_absolute():
            base = str(path.parent / base)
        parent = load_recipe(base, (*_seen, path.resolve()))
        parent.pop("name", None)
        data = _merged(parent, data)
    data.setdefault("name", path.stem)
    return data


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, with a clear error."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: a value is required")
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return base(value)
        if origin is list or base is list:
            (item,) = typing.get_args(base) or (str,)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            return [_coerce(name, item, v) for v in value]
        if origin is dict or base is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
        if origin is typing.Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError, json.JSONDecodeError) as err:
        raise ConfigError(f"{name}: cannot read {value!r} as {getattr(base, '__name__', base)}") from err
    return value


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build(cls: type[SettingsT], *layers: dict[str, Any]) -> SettingsT:
    """Instantiate ``cls`` from successive override dicts (later wins; mapping-valued settings such as
    ``model`` are merged key by key); unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in names:
                raise ConfigError(f"unknown setting {key!r} for {cls.__name__}; known: {', '.join(sorted(names))}")
            value = _coerce(key, hints[key], value)
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                value = _merged(kwargs[key], value)  # a mapping overrides the keys it names, keeps the rest
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(str(err)) from err


def required_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("required")]


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------- CLI glue
def add_arguments(parser: argparse.ArgumentParser, cls: type, recipe_defaults: dict[str, Any]) -> None:
    """One flag per dataclass field; defaults shown are the recipe's (or the dataclass')."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli") is False:
            continue
        base, _ = _unwrap_optional(hints[f.name])
        if f.default is not dataclasses.MISSING:
            fallback = f.default
        elif f.default_factory is not dataclasses.MISSING:
            fallback = f.default_factory()
        else:
            fallback = None
        default = recipe_defaults.get(f.name, fallback)
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        shown = json.dumps(default) if isinstance(default, (dict, list)) else default
        text = f"{text} (default: {shown})".replace("%", "%%")  # argparse formats help with %
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=None, metavar=f.name.upper(), help=text)
            continue
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        metavar = f.name.upper()
        if typing.get_origin(base) is typing.Literal:
            metavar = "{" + ",".join(map(str, typing.get_args(base))) + "}"
        elif typing.get_origin(base) is dict or base is dict:
            metavar = "JSON"
        elif typing.get_origin(base) is list:
            metavar = "A,B,..."
        parser.add_argument(flag, dest=f.name, default=None, metavar=metavar, help=text)


def from_args(cls: type[SettingsT], recipe: dict[str, Any], section: str, args: argparse.Namespace) -> SettingsT:
    flags = {k: v for k, v in vars(args).items()
             if v is not None and k in {f.name for f in dataclasses.fields(cls)}}
    return build(cls, recipe.get(section) or {}, flags)


@dataclass
class TrainArgs:
    """Knobs of the shared training loop (``mmphi.train.fit``) common to every training verb."""

    out: str = opt("runs/run", "run directory (metrics.jsonl, checkpoints/, final/, loss.png)")
    seed: int = opt(0, "random seed (model init, data order, dropout)")
    max_steps: int = opt(1000, "optimizer steps to train for")
    max_minutes: float = opt(0.0, "stop (and save) after this many minutes of training; 0 = no limit")
    batch_size: int = opt(32, "micro-batch size per process")
    grad_accum: int = opt(1, "micro-batches accumulated per optimizer step")
    lr: float = opt(1e-3, "peak learning rate")
    min_lr_ratio: float = opt(0.1, "final learning rate of the cosine schedule, as a fraction of lr")
    warmup_steps: int = opt(50, "linear warm-up steps")
    weight_decay: float = opt(0.01, "AdamW weight decay (not applied to biases and norms)")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(1.0, "clip the gradient norm to this value; 0 disables")
    optimizer: typing.Literal["auto", "adamw", "adamw8bit"] = opt(
        "auto", "optimizer; auto = 8-bit AdamW (bitsandbytes) on CUDA, torch AdamW otherwise")
    precision: typing.Literal["auto", "fp32", "bf16"] = opt(
        "auto", "auto = bf16 autocast on CUDA, fp32 on CPU")
    grad_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    compile: bool = opt(False, "torch.compile the training forward pass (faster steps after a one-off compile; "
                               "evaluation stays eager; runs then do not repeat bit for bit)")
    log_every: int = opt(10, "log a metrics line every N steps")
    eval_every: int = opt(100, "evaluate on the validation split every N steps")
    eval_batches: int = opt(8, "validation micro-batches per evaluation")
    save_every: int = opt(200, "write a resumable checkpoint every N steps")
    keep_checkpoints: int = opt(2, "how many recent checkpoints to keep")
    resume: bool = opt(False, "continue from the last complete checkpoint in --out")
    num_workers: int = opt(0, "data-loader worker processes")
    dry_run: bool = opt(False, "plan, do not train: print the resolved settings, processes, global batch, steps per "
                               "epoch and the estimated memory per GPU, loading no weights (model configs only)")
    processes: int = opt(0, "processes (GPUs) to plan for; 0 = what the launcher says (accelerate's WORLD_SIZE), "
                            "else 1. A real run refuses a --processes that differs from the processes launched")
    gpu_memory: float = opt(0.0, "GB (GiB) of memory per GPU: --dry-run refuses settings estimated not to fit; "
                                 "0 = no check")
    sharding: typing.Literal["auto", "none", "full"] = opt(
        "auto", "what the plan assumes of the model state across processes: none = each process holds all of it "
                "(DDP), full = split (FSDP full shard / DeepSpeed ZeRO-3, set up with `accelerate config`); "
                "auto = full when accelerate's launch environment says FSDP or DeepSpeed")

    def __post_init__(self) -> None:
        check(self.max_steps > 0, f"max_steps must be > 0, got {self.max_steps}")
        check(self.max_minutes >= 0, f"max_minutes must be >= 0, got {self.max_minutes}")
        check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        check(self.grad_accum > 0, f"grad_accum must be > 0, got {self.grad_accum}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        for name in ("log_every", "eval_every", "save_every", "keep_checkpoints"):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        check(self.eval_batches >= 0, f"eval_batches must be >= 0, got {self.eval_batches}")
        check(self.processes >= 0, f"processes must be >= 0, got {self.processes}")
        check(self.gpu_memory >= 0, f"gpu_memory must be >= 0, got {self.gpu_memory}")
