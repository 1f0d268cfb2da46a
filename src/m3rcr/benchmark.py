"""The whole benchmark in one command: train (or load) every method, evaluate each on the same split
with the image, NDVI and semantic metrics, measure complexity, and write every table and figure.

A benchmark configuration (``configs/benchmark.yaml``)::

    out: runs/benchmark                  # default output folder (--out overrides)
    data: {root, split: test, crop: null, synth: null}   # synth: {train, test, seed} makes synthetic data if absent
    overrides: [...]                     # applied to every training configuration (e.g. data.root=...)
    methods:                             # in table order
      - {name: Cloudy, kind: cloudy}
      - {name: Align-CR, config: configs/aligncr.yaml, overrides: [...], checkpoint: null}
    segmentation: {config: configs/segmentation.yaml, overrides: [...], checkpoint: null}
    complexity: {size: 160, repeats: 3, device: cpu}
    evaluation: {batch_size: 4, device: auto, figure_count: 4, sar_mode: nearest}

The output folder::

    OUT/runs/<method>/ ...            training runs (resumed if interrupted)
    OUT/eval/<method>/ ...            m3rcr evaluate folders, with per-image metrics.csv and predictions/*.tif
    OUT/semantic/ ...                 the semantic evaluation
    OUT/complexity/<method>.json
    OUT/report/                       report.md, results.json, every table (.md, .csv) and figure
    OUT/benchmark_state.json          finished steps: an interrupted benchmark resumes without redoing them
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from m3rcr.training.config import ConfigError
from m3rcr.utils.files import atomic_path

STATE_FILE = "benchmark_state.json"


def slug(name: str) -> str:
    """A folder name for a method name ("Align-CR w/o SAR" -> "align-cr_w-o_sar")."""
    return re.sub(r"[^a-z0-9.-]+", "_", name.lower().replace("/", "-")).strip("_") or "method"


def load_benchmark_config(path: str | Path) -> dict[str, Any]:
    """Read and check a benchmark configuration."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: benchmark configuration not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    allowed = {"out", "data", "overrides", "methods", "segmentation", "complexity", "evaluation"}
    unknown = set(config) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; sections: {sorted(allowed)}")
    methods = config.get("methods") or []
    if not methods:
        raise ConfigError(f"{path}: no methods listed")
    names = [m.get("name") for m in methods]
    if None in names or len(set(map(slug, names))) != len(names):
        raise ConfigError(f"{path}: every method needs a distinct name")
    for m in methods:
        kind = m.get("kind", "train")
        if kind not in ("cloudy", "train"):
            raise ConfigError(f"{path}: method {m['name']!r}: kind must be 'cloudy' or 'train'")
        if kind == "train" and not (m.get("config") or m.get("checkpoint")):
            raise ConfigError(f"{path}: method {m['name']!r} needs a training config or a checkpoint")
    if not (config.get("data") or {}).get("root"):
        raise ConfigError(f"{path}: data.root is required")
    return config


class Benchmark:
    """Runs a benchmark configuration step by step, recording finished steps in ``OUT/benchmark_state.json``."""

    def __init__(self, config: dict[str, Any], out: str | Path, progress: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = Path(out)
        self.log = progress
        self.state_path = self.out / STATE_FILE
        self.done: list[str] = json.loads(self.state_path.read_text())["done"] if self.state_path.is_file() else []
        data = config["data"]
        self.root = Path(data["root"])
        self.split = data.get("split", "test")
        self.crop = data.get("crop")
        ev = config.get("evaluation") or {}
        self.batch_size = int(ev.get("batch_size", 4))
        self.device = ev.get("device", "auto")
        self.figure_count = int(ev.get("figure_count", 4))
        self.sar_mode = ev.get("sar_mode", "nearest")

    # ------------------------------------------------------------------ bookkeeping
    def _finish(self, step: str) -> None:
        self.done.append(step)
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps({"done": self.done}, indent=1))

    def step(self, name: str, fn: Callable[[], Any]) -> None:
        """Run ``fn`` unless step ``name`` finished in an earlier run."""
        if name in self.done:
            self.log(f"[benchmark] {name}: done earlier, skipped")
            return
        self.log(f"[benchmark] {name}")
        fn()
        self._finish(name)

    def _device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    # ------------------------------------------------------------------ steps
    def make_data(self) -> None:
        synth = (self.config["data"] or {}).get("synth")
        if synth and not (self.root / f"{self.split}.csv").is_file() and not (self.root / self.split).is_dir():
            from m3rcr.data.synthetic import generate_dataset

            generate_dataset(self.root, int(synth.get("train", 24)), int(synth.get("test", 8)),
                             seed=int(synth.get("seed", 0)))

    def _train(self, config_path: str, overrides: list[str], run_dir: Path) -> Path:
        from m3rcr.training.config import load_config
        from m3rcr.training.run import STATE, train

        all_overrides = [f"data.root={self.root}", *(self.config.get("overrides") or []), *overrides,
                         f"run.dir={run_dir}"]
        if (run_dir / STATE).is_file():  # interrupted earlier: continue that run to its configured length
            return train(resume=run_dir, overrides=all_overrides)
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a start that never saved a state
        return train(load_config(config_path, all_overrides))

    def checkpoint_of(self, method: dict[str, Any]) -> Path:
        return Path(method["checkpoint"]) if method.get("checkpoint") else \
            self.out / "runs" / slug(method["name"]) / "checkpoints" / "best.ckpt"

    def train_method(self, method: dict[str, Any]) -> None:
        self._train(method["config"], list(method.get("overrides") or []), self.out / "runs" / slug(method["name"]))

    def _dataset(self):
        from m3rcr.data import M3RCRDataset

        return M3RCRDataset(self.root, self.split, sar_mode=self.sar_mode,
                            landcover_mode="geo" if self.sar_mode == "geo" else "nearest", crop_size=self.crop,
                            crop="center")

    def evaluate_method(self, method: dict[str, Any]) -> None:
        from m3rcr.evaluation.evaluate import cloudy_predictor, evaluate, model_predictor
        from m3rcr.models import load_model

        device = self._device()
        if method.get("kind") == "cloudy":
            predict, settings = cloudy_predictor, {"checkpoint": None}
        else:
            ckpt = self.checkpoint_of(method)
            model = load_model(ckpt, device=device)
            predict = model_predictor(model)
            settings = {"checkpoint": str(ckpt), "model": getattr(model, "registry_name", None)}
        evaluate(predict, self._dataset(), self.out / "eval" / slug(method["name"]), method["name"],
                 batch_size=self.batch_size, device=device, save_predictions=True,
                 figure_count=self.figure_count, settings=settings, progress=False)

    def complexity(self, method: dict[str, Any]) -> None:
        from m3rcr.evaluation.complexity import measure
        from m3rcr.models import load_model

        cfg = self.config.get("complexity") or {}
        size = int(cfg.get("size", 160))
        model = load_model(self.checkpoint_of(method))
        device = cfg.get("device", "cpu")
        if device == "auto":
            device = str(self._device())
        result = measure(model, method["name"], size=(size, size), repeats=int(cfg.get("repeats", 3)), device=device)
        path = self.out / "complexity" / f"{slug(method['name'])}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({**result.as_dict(), "registry_name": getattr(model, "registry_name", None)},
                                      indent=1))

    def segmentation_checkpoint(self) -> Path:
        seg = self.config.get("segmentation") or {}
        return Path(seg["checkpoint"]) if seg.get("checkpoint") else \
            self.out / "runs" / "segmentation" / "checkpoints" / "best.ckpt"

    def train_segmentation(self) -> None:
        seg = self.config["segmentation"]
        self._train(seg["config"], list(seg.get("overrides") or []), self.out / "runs" / "segmentation")

    def semantic(self) -> None:
        from m3rcr.evaluation.semantic import predictions_source, semantic_evaluate
        from m3rcr.models import load_segmentation_model

        device = self._device()
        sources: dict[str, Any] = {"Cloud-free": lambda b: b["cloudfree"]}
        for m in self.config["methods"]:
            if m.get("kind") == "cloudy":
                sources[m["name"]] = lambda b: b["cloudy"]
            else:
                sources[m["name"]] = predictions_source(self.out / "eval" / slug(m["name"]) / "predictions")
        semantic_evaluate(load_segmentation_model(self.segmentation_checkpoint(), device=device), self._dataset(),
                          sources, self.out / "semantic", batch_size=self.batch_size, device=device,
                          figure_count=min(self.figure_count, 3), progress=False)

    def report(self) -> None:
        from m3rcr.reports.benchmark import write_report

        write_report(self)

    # ------------------------------------------------------------------ the whole run
    def run(self) -> Path:
        """Every step in order; finished steps of an earlier run are skipped."""
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "benchmark_config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.step("data", self.make_data)
        methods = self.config["methods"]
        trained = [m for m in methods if m.get("kind", "train") == "train"]
        for m in trained:
            if not m.get("checkpoint"):
                self.step(f"train:{slug(m['name'])}", lambda m=m: self.train_method(m))
        for m in methods:
            self.step(f"evaluate:{slug(m['name'])}", lambda m=m: self.evaluate_method(m))
        for m in trained:
            self.step(f"complexity:{slug(m['name'])}", lambda m=m: self.complexity(m))
        if self.config.get("segmentation"):
            if not self.config["segmentation"].get("checkpoint"):
                self.step("train:segmentation", self.train_segmentation)
            self.step("semantic", self.semantic)
        self.report()  # always rewritten: cheap, and reflects every finished step
        return self.out
