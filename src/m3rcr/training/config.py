"""Experiment configuration: one YAML file per experiment, command-line overrides, validation.

A configuration has these sections (every key optional; see ``configs/aligncr.yaml``)::

    seed: 0
    task:     cloud_removal | segmentation      # segmentation: the land-cover model of the benchmark
    model:    {name: aligncr, config: {...}}    # a registered model and its constructor arguments
    loss:     {name: cloud_charbonnier, config: {...}}   # a registered loss (m3rcr.training.losses.LOSSES)
    gan:      GANConfig fields                  # only for the GAN baselines
    optim:    OptimConfig fields
    schedule: ScheduleConfig fields
    data:     m3rcr.data.DataOptions: {name: m3rcr, root, batch_size, ...}; batch_size is the GLOBAL batch
              (split over devices and nodes)
    trainer:  lightning.Trainer arguments (max_epochs, accelerator, devices, num_nodes, strategy, precision, ...)
    run:      RunConfig fields; early_stopping: null | true | EarlyStoppingConfig fields

Each section is checked against what builds it: the registry entry's constructor signature (model, loss,
gan.discriminator), the dataclasses of :mod:`m3rcr.training.settings` (whose fields and defaults are the only
list of them), :func:`m3rcr.data.check_data_config` and ``lightning.Trainer``'s signature. An unknown key is an
error naming the close spelling.

Overrides are ``section.key=value`` strings whose values are parsed as YAML (``trainer.max_epochs=2``,
``model.config.features=32``, ``data.root=/data/m3rcr``).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import lightning as L
import yaml

from m3rcr.data import check_data_config
from m3rcr.models.discriminators import DISCRIMINATORS
from m3rcr.models.registry import MODELS_BY_TASK
from m3rcr.training.losses import LOSSES
from m3rcr.training.settings import (
    Component,
    EarlyStoppingConfig,
    GANConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)
from m3rcr.utils.config_files import ConfigError, read_yaml_mapping
from m3rcr.utils.plain import plain
from m3rcr.utils.registry import Registry, RegistryError
from m3rcr.utils.text import did_you_mean, spelled

S = TypeVar("S")

#: Trainer arguments that the run sets itself, and where a configuration says what it wants instead
_SET_BY_RUN = {"logger": "the run logs to RUN/logs", "callbacks": "see the run section",
               "default_root_dir": "set run.dir", "enable_progress_bar": "set run.progress_bar"}


def defaults() -> dict[str, Any]:
    """The configuration every file and override is applied to (from :class:`TrainConfig`'s defaults)."""
    return plain(TrainConfig())


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively with ``update`` (new dicts; inputs untouched)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``, the value parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string; people mean a number
        try:
            value = float(value)
        except ValueError:
            pass
    out: dict[str, Any] = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults, updated by the YAML file, then by the overrides; validated."""
    config = defaults()
    if path is not None:
        config = deep_merge(config, read_yaml_mapping(path, "configuration"))
    for text in overrides:
        config = deep_merge(config, parse_override(text))
    validate(config)
    return config


def validate(config: Mapping[str, Any]) -> None:
    """Refuse unknown sections and keys (typos would otherwise be silently ignored) and invalid values."""
    parse_config(config)


def parse_config(config: Mapping[str, Any]) -> TrainConfig:
    """The checked, typed form of a configuration (sections it lacks take their defaults)."""
    config = deep_merge(defaults(), config)
    sections = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = [key for key in config if key not in sections]
    if unknown:
        raise ConfigError(f"unknown section(s) {_spelled(unknown, sections)}; sections: {sorted(sections)}")
    hints = typing.get_type_hints(TrainConfig)
    for key in ("seed", "task"):
        _check_type(config[key], hints[key], key)
    parsed = TrainConfig(
        seed=config["seed"], task=config["task"],
        model=_component(config["model"], MODELS_BY_TASK[config["task"]], "model"),
        loss=_component(config["loss"], LOSSES, "loss"),
        optim=parse_section(OptimConfig, config["optim"], "optim"),
        schedule=parse_section(ScheduleConfig, config["schedule"], "schedule"),
        gan=None if config["gan"] is None else _gan(config["gan"]),
        data=_data(config["data"]), trainer=_trainer(config["trainer"]), run=_run(config["run"]))
    if parsed.gan is not None:
        if parsed.task == "segmentation":
            raise ConfigError("a segmentation run has no gan section")
        if parsed.trainer.get("accumulate_grad_batches", 1) not in (1, None):
            raise ConfigError("GAN training updates both networks every step: accumulate_grad_batches must be 1")
    return parsed


def parse_section(cls: type[S], values: Any, where: str) -> S:
    """``cls`` (a settings dataclass) from a configuration mapping: keys checked against its fields, values
    against their types; ``where`` names the section in messages."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping of {', '.join(fields)}")
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise ConfigError(f"unknown key(s) {_spelled(unknown, fields)} in '{where}'; allowed: {sorted(fields)}")
    missing = [name for name, f in fields.items() if name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}.{missing[0]} is required")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        _check_type(value, hints[key], f"{where}.{key}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else copy.deepcopy(v) for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _component(values: Any, registry: Registry[Any], where: str) -> Component:
    """A ``{name, config}`` section naming an entry of ``registry``, its arguments checked against the
    constructor's signature."""
    if isinstance(values, Mapping):
        stray = [key for key in values if key not in ("name", "config")]
        name = values.get("name")
        if stray and isinstance(name, str) and name in registry and all(
                key in registry.entry(name).parameters() for key in stray):
            raise ConfigError(f"{where}: constructor arguments go under {where}.config: write "
                              + ", ".join(f"{where}.config.{key}" for key in stray))
    comp = parse_section(Component, values, where)
    _check_registered(registry, comp.name, comp.config, f"{where}.name")
    return comp


def _check_registered(registry: Registry, name: Any, config: Mapping[str, Any], name_key: str,
                      config_key: str | None = None) -> None:
    """Refuse a ``name`` that ``registry`` does not know (naming the setting ``name_key`` and the close
    spelling) and a ``config`` its constructor does not take (under ``config_key``, if given)."""
    if name not in registry:
        raise ConfigError(f"{name_key} {name!r} is not a {registry.kind}{did_you_mean(name, registry.names())}; "
                          f"known: {', '.join(registry.names())}")
    try:
        registry.check(name, config)
    except RegistryError as exc:
        raise ConfigError(f"{config_key}: {exc}" if config_key else str(exc)) from None


def _gan(values: Any) -> GANConfig:
    gan = parse_section(GANConfig, values, "gan")
    _check_registered(DISCRIMINATORS, gan.discriminator, gan.discriminator_config, "gan.discriminator",
                      "gan.discriminator_config")
    return gan


def _data(values: Any) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        raise ConfigError("data must be a mapping (m3rcr.data.DataOptions: name, root, batch_size, ...)")
    if "seed" in values:
        raise ConfigError("data.seed: the validation hold-out uses the top-level seed; set seed instead")
    try:
        check_data_config(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc) if str(exc).startswith("data") else f"data: {exc}") from None
    return dict(values)


def _trainer(values: Any) -> dict[str, Any]:
    """``lightning.Trainer`` arguments, checked against its signature and annotations."""
    if not isinstance(values, Mapping):
        raise ConfigError("trainer must be a mapping of lightning.Trainer arguments")
    params = inspect.signature(L.Trainer).parameters
    for key, why in _SET_BY_RUN.items():
        if key in values:
            raise ConfigError(f"trainer.{key} cannot be set: {why}")
    allowed = [name for name in params if name not in _SET_BY_RUN]
    unknown = [key for key in values if key not in allowed]
    if unknown:
        raise ConfigError(f"unknown key(s) {_spelled(unknown, allowed)} in 'trainer'; see lightning.Trainer")
    hints = typing.get_type_hints(L.Trainer.__init__)
    for key, value in values.items():
        _check_type(value, hints.get(key, Any), f"trainer.{key}")
    # Lightning reads max_epochs -1 as "train forever" and 0 as "train nothing" (exiting as if done)
    epochs = values.get("max_epochs")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be at least 1, got {epochs} (bound a run by trainer.max_steps "
                          "instead, if that is what you want)")
    return dict(values)


def _run(values: Any) -> RunConfig:
    if not isinstance(values, Mapping):
        raise ConfigError("run must be a mapping of " + ", ".join(f.name for f in dataclasses.fields(RunConfig)))
    values = dict(values)
    es = values.pop("early_stopping", None)
    run = parse_section(RunConfig, values, "run")
    if es is None or es is False:
        return run
    if es is not True and not isinstance(es, Mapping):
        raise ConfigError("run.early_stopping must be null, true or a mapping {patience, min_delta, monitor, mode}")
    stop = parse_section(EarlyStoppingConfig, {} if es is True else es, "run.early_stopping")
    return dataclasses.replace(run, early_stopping=stop)


def _spelled(keys: Sequence[str], allowed: Sequence[str] | Mapping[str, Any]) -> str:
    """``keys`` as a list, each with the close spelling among ``allowed`` if there is one."""
    return "[" + ", ".join(spelled(key, allowed) for key in keys) + "]"


def _describe(hint: Any) -> str:
    """Words for what a type annotation allows, for error messages."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    if origin is Literal:
        return " or ".join(repr(arg) for arg in get_args(hint))
    words = {type(None): "null", bool: "true or false", int: "a number (an integer)", float: "a number",
             str: "a string"}
    if hint in words:
        return words[hint]
    if origin in (tuple, list) or hint in (tuple, list):
        return "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a configuration value fits a type annotation (annotations it cannot judge pass)."""
    origin = get_origin(hint)
    if hint is Any or isinstance(hint, TypeVar):
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return any(value == arg and type(value) is type(arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float):  # a bool is an int to Python, not to a configuration
        return isinstance(value, int | float if hint is float else int) and not isinstance(value, bool)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        args = get_args(hint)
        if origin is tuple and args and Ellipsis not in args:  # tuple[float, float]: that many, of those types
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, origin or hint) if isinstance(origin or hint, type) else True


def _check_type(value: Any, hint: Any, where: str) -> None:
    if not _matches(value, hint):
        raise ConfigError(f"{where} must be {_describe(hint)}, got {value!r}")


def dump(config: Mapping[str, Any]) -> str:
    """The configuration as YAML text."""
    return yaml.safe_dump(dict(config), sort_keys=False)
