"""Experiment configuration: one YAML file per experiment, command-line overrides, validation.

A configuration has these sections (every key optional; see ``configs/aligncr.yaml``)::

    seed: 0
    task:     cloud_removal | segmentation                # segmentation: the land-cover model of the benchmark
    model:    {name: aligncr, config: {...}}              # m3rcr.models.create_model
    loss:     {name: cloud_charbonnier, config: {...}}    # m3rcr.training.losses
    gan:      {discriminator, discriminator_config, adversarial_weight, reconstruction_weight,
               attention_weight, d_loss_scale, d_lr}          # only for the GAN baselines
    optim:    {lr, align_lr, betas, weight_decay}
    schedule: {kind: step | linear | constant, constant_epochs, step_epochs, gamma, decay_epochs}
    data:     M3RCRDataModule arguments; batch_size is the GLOBAL batch (split over devices and nodes)
    trainer:  lightning.Trainer arguments (max_epochs, accelerator, devices, num_nodes, strategy, precision,
              gradient_clip_val, accumulate_grad_batches, ...)
    run:      {dir, checkpoint_every_n_steps, progress_bar,
               early_stopping: null | {patience, min_delta, monitor: val/loss, mode: min}}
              progress_bar: true shows a bar on a terminal and plain lines (each epoch, and every minute)
              when the output goes to a file; false shows neither

Overrides are ``section.key=value`` strings whose values are parsed as YAML (``trainer.max_epochs=2``,
``model.config.features=32``, ``data.root=/data/m3rcr``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "task": "cloud_removal",
    "model": {"name": "aligncr", "config": {}},
    "loss": {"name": "cloud_charbonnier", "config": {}},
    "optim": {"lr": 1e-4, "align_lr": 1e-5, "betas": [0.9, 0.999], "weight_decay": 0.0},
    "schedule": {"kind": "step", "constant_epochs": 10, "step_epochs": 5, "gamma": 0.5},
    "data": {"root": "data/m3rcr", "batch_size": 12, "crop_size": 160, "sar_mode": "nearest"},
    "trainer": {"max_epochs": 30, "accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto",
                "precision": "32-true", "log_every_n_steps": 50},
    "run": {"dir": "runs/aligncr", "checkpoint_every_n_steps": None, "progress_bar": True, "early_stopping": None},
}
#: what ``run.early_stopping`` may set, and its defaults (stop when val/loss has not improved for 5 epochs)
EARLY_STOPPING_DEFAULTS: dict[str, Any] = {"monitor": "val/loss", "mode": "min", "patience": 5, "min_delta": 0.0}
_SECTIONS = {"seed", "task", "model", "loss", "gan", "optim", "schedule", "data", "trainer", "run"}
_FIXED_KEYS = {
    "model": {"name", "config"},
    "loss": {"name", "config"},
    "optim": {"lr", "align_lr", "betas", "weight_decay"},
    "schedule": {"kind", "constant_epochs", "step_epochs", "gamma", "decay_epochs"},
    "gan": {"discriminator", "discriminator_config", "adversarial_weight", "reconstruction_weight",
            "attention_weight", "d_loss_scale", "d_lr"},
    "run": {"dir", "checkpoint_every_n_steps", "progress_bar", "early_stopping"},
}


_NUMERIC_TRAINER_KEYS = {
    "max_epochs", "min_epochs", "max_steps", "min_steps", "num_nodes", "log_every_n_steps", "accumulate_grad_batches",
    "gradient_clip_val", "limit_train_batches", "limit_val_batches", "limit_test_batches", "val_check_interval",
    "check_val_every_n_epoch", "num_sanity_val_steps",
}


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


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
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: a configuration must be a mapping of sections")
        config = deep_merge(config, loaded)
    for text in overrides:
        config = deep_merge(config, parse_override(text))
    validate(config)
    return config


def validate(config: Mapping[str, Any]) -> None:
    """Refuse unknown sections and keys (typos would otherwise be silently ignored)."""
    import lightning as L

    from m3rcr.data.datamodule import M3RCRDataModule
    from m3rcr.models.registry import list_models
    from m3rcr.training.losses import create_loss

    unknown = set(config) - _SECTIONS
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; sections: {sorted(_SECTIONS)}")
    for section, allowed in _FIXED_KEYS.items():
        extra = set(config.get(section) or {}) - allowed
        if extra:
            raise ConfigError(f"unknown key(s) {sorted(extra)} in '{section}'; allowed: {sorted(allowed)}")
    data_keys = set(inspect.signature(M3RCRDataModule).parameters)
    extra = set(config["data"]) - data_keys
    if extra:
        raise ConfigError(f"unknown key(s) {sorted(extra)} in 'data'; allowed: {sorted(data_keys)}")
    trainer_keys = set(inspect.signature(L.Trainer).parameters) - {"logger", "callbacks", "default_root_dir"}
    extra = set(config["trainer"]) - trainer_keys
    if extra:
        raise ConfigError(f"unknown key(s) {sorted(extra)} in 'trainer'; see lightning.Trainer")
    for key in ("lr", "align_lr", "weight_decay"):
        value = config["optim"].get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"optim.{key} must be a number, got {value!r}")
    for key in _NUMERIC_TRAINER_KEYS & set(config["trainer"]):
        value = config["trainer"][key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"trainer.{key} must be a number, got {value!r}")
    # Lightning reads max_epochs -1 as "train forever" and 0 as "train nothing" (exiting as if done)
    epochs = config["trainer"].get("max_epochs")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be at least 1, got {epochs} (bound a run by trainer.max_steps "
                          "instead, if that is what you want)")
    batch = config["data"].get("batch_size")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"data.batch_size must be a whole number >= 1, got {batch!r}")
    early_stopping(config)
    if config.get("task") not in ("cloud_removal", "segmentation"):
        raise ConfigError(f"task must be cloud_removal or segmentation, got {config.get('task')!r}")
    if config["task"] == "cloud_removal" and config["model"].get("name") not in list_models():
        raise ConfigError(f"model.name {config['model'].get('name')!r} is not a model ({', '.join(list_models())})")
    if config["task"] == "segmentation":
        from m3rcr.models.segmentation import list_segmentation_models

        if config["model"]["name"] not in list_segmentation_models():
            raise ConfigError(f"model.name {config['model']['name']!r} is not a segmentation model "
                              f"({', '.join(list_segmentation_models())})")
        if config.get("gan") is not None:
            raise ConfigError("a segmentation run has no gan section")
    if not isinstance(config["model"].get("config") or {}, Mapping):
        raise ConfigError("model.config must be a mapping of constructor arguments")
    try:
        create_loss(config["loss"]["name"], **(config["loss"].get("config") or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss: {exc}") from None
    from m3rcr.training.module import SCHEDULE_DEFAULTS, lr_factor

    try:
        lr_factor(0, **{**SCHEDULE_DEFAULTS, **config["schedule"]})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"schedule: {exc}") from None
    if config.get("gan") is not None:
        if "discriminator" not in config["gan"]:
            raise ConfigError("gan.discriminator is required (two_stream or patchgan)")
        if config["trainer"].get("accumulate_grad_batches", 1) not in (1, None):
            raise ConfigError("GAN training updates both networks every step: accumulate_grad_batches must be 1")


def early_stopping(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checked settings of ``run.early_stopping`` (None: train for all epochs)."""
    es = (config.get("run") or {}).get("early_stopping")
    if es is None or es is False:
        return None
    if es is True:
        es = {}
    if not isinstance(es, Mapping):
        raise ConfigError("run.early_stopping must be null, true or a mapping {patience, min_delta, monitor, mode}")
    extra = set(es) - set(EARLY_STOPPING_DEFAULTS)
    if extra:
        raise ConfigError(f"unknown key(s) {sorted(extra)} in 'run.early_stopping'; "
                          f"allowed: {sorted(EARLY_STOPPING_DEFAULTS)}")
    out = {**EARLY_STOPPING_DEFAULTS, **es}
    if isinstance(out["patience"], bool) or not isinstance(out["patience"], int) or out["patience"] < 1:
        raise ConfigError(f"run.early_stopping.patience must be a whole number >= 1, got {out['patience']!r}")
    if isinstance(out["min_delta"], bool) or not isinstance(out["min_delta"], int | float) or out["min_delta"] < 0:
        raise ConfigError(f"run.early_stopping.min_delta must be a number >= 0, got {out['min_delta']!r}")
    if out["mode"] not in ("min", "max"):
        raise ConfigError(f"run.early_stopping.mode must be 'min' or 'max', got {out['mode']!r}")
    return out


def dump(config: Mapping[str, Any]) -> str:
    """The configuration as YAML text."""
    return yaml.safe_dump(dict(config), sort_keys=False)
