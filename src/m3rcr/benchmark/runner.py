"""The benchmark run: every step in order, recorded in ``OUT/benchmark_state.json`` (see :mod:`m3rcr.benchmark`)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from m3rcr.benchmark.config import (
    SEN12MSCR_OPTIONS,
    STATE_FILE,
    dataset_of,
    file_hash,
    fingerprint,
    semantic_source,
    sen12mscr_synth_config,
    slug,
    step_name,
)
from m3rcr.benchmark.report import write_report
from m3rcr.data import DATASETS, CloudRemovalDataset, Sampling
from m3rcr.data.sen12mscr.preprocess import S2_BANDS, band_indices
from m3rcr.errors import DataError
from m3rcr.evaluation.complexity import measure
from m3rcr.evaluation.evaluate import EvalOptions, evaluation_dataset
from m3rcr.evaluation.semantic import SemanticOptions, predictions_source, reference_sources
from m3rcr.inference.predictors import cloudy_predictor, mean_fill_predictor, model_predictor
from m3rcr.models import load_model, load_segmentation_model
from m3rcr.models.checkpoint import check_data_fits, checkpoint_data, dataset_defaults, read_checkpoint
from m3rcr.training.config import ConfigError, load_config
from m3rcr.training.run import STATE, run_data_record, train
from m3rcr.utils.config_files import read_yaml_mapping
from m3rcr.utils.device import resolve_device
from m3rcr.utils.files import atomic_path
from m3rcr.workflows import evaluate, semantic_evaluate


class Benchmark:
    """Runs a benchmark configuration step by step, recording finished steps in ``OUT/benchmark_state.json``."""

    def __init__(self, config: dict[str, Any], out: str | Path, progress: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = Path(out)
        self.log = progress
        self.state_path = self.out / STATE_FILE
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        # step -> fingerprint of its inputs; a step is done only if its inputs have not changed since
        self.done: dict[str, str] = state.get("done", {}) if isinstance(state.get("done"), dict) else {}
        self.started: dict[str, str] = state.get("started", {})
        self.fingerprints: dict[str, str] = {}
        self.timings: dict[str, float] = {k: float(v) for k, v in (state.get("timings") or {}).items()}
        self._plan: list[str] = []  # every step name of this run, in order
        self._left: dict[str, None] = {}  # steps still to do (ordered)
        self._position = 1
        data = config["data"]
        self.root = Path(data["root"])
        self.split = data.get("split", "test")
        self.crop = data.get("crop")
        self.dataset = dataset_of(config)
        # SEN12MS-CR's options of the data section: every evaluation and (as overrides) every training uses them
        self.dataset_options: dict[str, Any] = {k: data[k] for k in SEN12MSCR_OPTIONS if k in data} \
            if self.dataset == "sen12mscr" else {}
        ev = config.get("evaluation") or {}
        self.batch_size = int(ev.get("batch_size", 4))
        self.device = ev.get("device", "auto")
        self.figure_count = int(ev.get("figure_count", 4))
        self.sar_mode = ev.get("sar_mode", "nearest")
        self._resumable: dict[str, bool] = {}
        self._config_seed: dict[str, int] = {}

    # ------------------------------------------------------------------ bookkeeping
    def _save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps({"done": self.done, "started": self.started, "timings": self.timings},
                                      indent=1))

    def step(self, name: str, fp: str, fn: Callable[[], Any]) -> None:
        """Run ``fn`` unless step ``name`` finished in an earlier run with the same inputs (``fp``)."""
        self.fingerprints[name] = fp
        position = f"{self._position}/{len(self._plan)}" if self._plan else ""
        self._position += 1
        if self.done.get(name) == fp:
            self.log(f"[benchmark] {position} {name}: done earlier, skipped")
            self._left.pop(name, None)
            return
        self.log(f"[benchmark] {position} {name}" + (" (inputs changed: redone)" if name in self.done else ""))
        self.done.pop(name, None)
        self.started[name] = fp
        self._save_state()
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        self.done[name] = fp
        self.timings[name] = seconds
        self._save_state()
        self._left.pop(name, None)
        self.log(f"[benchmark] {name}: {_duration(seconds)}; {self.eta()}")

    def eta(self) -> str:
        """Time left: each pending step takes the median time of the finished steps of its kind (train,
        evaluate, ...), or of all finished steps when none of its kind has finished yet. Medians, so
        that one step that waited (a paused or suspended run) does not inflate the estimate."""
        by_kind: dict[str, list[float]] = {}
        for name, sec in self.timings.items():
            by_kind.setdefault(_kind(name), []).append(sec)
        if not self._left:
            return "no steps left"
        if not self.timings:
            return "time left unknown"
        overall = statistics.median(self.timings.values())
        left = sum(statistics.median(by_kind[k]) if (k := _kind(n)) in by_kind else overall for n in self._left)
        guess = any(_kind(n) not in by_kind for n in self._left)
        return f"about {_duration(left)} left ({len(self._left)} steps{', rough' if guess else ''})"

    def _device(self):
        return resolve_device(str(self.device), "evaluation.device")

    # ------------------------------------------------------------------ steps
    def make_data(self) -> None:
        synth = (self.config["data"] or {}).get("synth")
        if synth and self.dataset == "sen12mscr":
            # the generator writes the whole official layout (all splits) into a missing or empty root
            if not self.root.is_dir() or not any(self.root.iterdir()):
                from m3rcr.data.synthetic.sen12mscr import generate_sen12mscr

                generate_sen12mscr(self.root, sen12mscr_synth_config(synth), seed=int(synth.get("seed", 0)))
            return
        if synth and not (self.root / f"{self.split}.csv").is_file() and not (self.root / self.split).is_dir():
            from m3rcr.data.synthetic import SynthConfig, generate_dataset

            options = {k: v for k, v in synth.items() if k not in ("train", "test", "seed")}
            try:
                config = SynthConfig(**options)
            except TypeError as exc:
                raise ConfigError(f"data.synth: {exc}") from None
            generate_dataset(self.root, int(synth.get("train", 24)), int(synth.get("test", 8)),
                             seed=int(synth.get("seed", 0)), config=config)

    def _overrides(self, overrides: list[str], run_dir: Path, seed: int | None = None) -> list[str]:
        seed_override = [] if seed is None else [f"seed={seed}"]
        # SEN12MS-CR: the benchmark's split rule, masks and bands for training too (values as YAML via JSON)
        options = [f"data.{k}={json.dumps(v)}" for k, v in self.dataset_options.items()]
        return [f"data.root={self.root}", *options, *(self.config.get("overrides") or []), *overrides,
                *seed_override, f"run.dir={run_dir}"]

    def _train_fp(self, config_path: str, overrides: list[str], seed: int | None = None) -> str:
        return fingerprint("train", config_path, file_hash(config_path),
                           self._overrides(overrides, Path("RUN"), seed))

    def _train(self, step: str, config_path: str, overrides: list[str], run_dir: Path, seed: int | None = None) -> None:
        """Train, or continue a run this same step started and did not finish (same inputs)."""
        all_overrides = self._overrides(overrides, run_dir, seed)
        resume = (run_dir / STATE).is_file() and self._resumable.get(step, False)
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)  # another configuration's run, or a start that never saved a state
        config = load_config(run_dir / "config.yaml" if resume else config_path, all_overrides)
        if _processes(config) > 1:
            # Lightning's DDP launcher starts the extra processes by re-running the command line: run the
            # training as its own command, so that only it (not the whole benchmark) is repeated
            cmd = [sys.executable, "-m", "m3rcr", "train"]
            cmd += ["--resume", str(run_dir)] if resume else ["--config", config_path]
            if subprocess.run([*cmd, *all_overrides], check=False).returncode != 0:
                raise RuntimeError(f"training {run_dir} failed (see its output above)")
        elif resume:
            train(resume=run_dir, overrides=all_overrides)
        else:
            train(config)

    def seeds(self, method: dict[str, Any]) -> list[int | None]:
        """The seeds a method is trained with: its own ``seeds``, else the benchmark's, else [None] (the
        training configuration's seed). Methods that are not trained have the one entry None."""
        if method.get("kind") in ("cloudy", "mean") or method.get("checkpoint"):
            return [None]
        seeds = method.get("seeds") or self.config.get("seeds")
        if seeds:
            return list(seeds)
        if method["name"] not in self._config_seed:
            config = load_config(method["config"], self._overrides(list(method.get("overrides") or []), Path("RUN")))
            self._config_seed[method["name"]] = int(config["seed"])
        return [self._config_seed[method["name"]]]

    def run_dir(self, method: dict[str, Any], seed: int | None) -> Path:
        """Training run folder of a method and seed."""
        return self.out / "runs" / slug(method["name"]) / f"seed{seed}"

    def eval_dir(self, method: dict[str, Any], seed: int | None) -> Path:
        """Evaluation folder of a method and seed (None: methods that are not trained)."""
        base = self.out / "eval" / slug(method["name"])
        return base if seed is None else base / f"seed{seed}"

    def checkpoint_of(self, method: dict[str, Any], seed: int | None = None) -> Path:
        if method.get("checkpoint"):
            return Path(method["checkpoint"])
        if seed is None:
            seed = self.seeds(method)[0]
        return self.run_dir(method, seed) / "checkpoints" / "best.ckpt"

    def train_method(self, method: dict[str, Any], seed: int | None = None) -> None:
        if seed is None:
            seed = self.seeds(method)[0]
        self._train(step_name("train", method, seed), method["config"], list(method.get("overrides") or []),
                    self.run_dir(method, seed), seed)

    def scored_dataset(self, record: dict[str, Any] | None = None) -> CloudRemovalDataset:
        """The split every method is scored on. SEN12MS-CR: with the data section's options, and a trained
        method's own preprocessing and bands from its checkpoint's data ``record`` (metrics are on reflectance,
        so methods trained with other scalings compare)."""
        if self.dataset == "m3rcr":
            return evaluation_dataset(self.root, self.split, sar_mode=self.sar_mode, crop=self.crop)
        options = {**self.dataset_options, "bands": self.dataset_options.get("bands", "all")}
        if record is not None:
            options.update(dataset_defaults(record, self.dataset))
        return DATASETS.build(self.dataset, root=self.root, split=self.split,
                              sampling=Sampling(crop_size=self.crop, crop="center"), **options)

    def bands(self) -> list[str]:
        """SEN12MS-CR: the optical bands every row is scored on (``data.bands``, all 13 by default)."""
        bands = self.dataset_options.get("bands", "all")
        return [S2_BANDS[i] for i in band_indices(bands if isinstance(bands, str) else tuple(bands))]

    def _checked_record(self, method: dict[str, Any], ckpt: Path) -> dict[str, Any] | None:
        """SEN12MS-CR: the data record of a method's checkpoint, refused unless it was trained on SEN12MS-CR with
        the benchmark's bands (rows over other bands do not compare). M3R-CR: None (nothing to pick)."""
        if self.dataset == "m3rcr":
            return None
        record = checkpoint_data(read_checkpoint(ckpt))
        if record is None or record.get("dataset") != self.dataset:
            trained = "M3R-CR (no data record)" if record is None else record.get("dataset")
            raise DataError(ckpt, f"method {method['name']!r}: trained on {trained}, not {self.dataset}; use a "
                                  f"checkpoint trained on {self.dataset}")
        if list(record.get("optical_bands") or []) != self.bands():
            raise DataError(ckpt, f"method {method['name']!r}: trained on bands "
                                  f"{', '.join(record.get('optical_bands') or [])}, but the benchmark scores "
                                  f"{', '.join(self.bands())} (data.bands); every row must be over the same bands")
        return record

    def evaluate_method(self, method: dict[str, Any], seed: int | None = None) -> None:
        device = self._device()
        record = None
        if method.get("kind") == "cloudy":
            predict, settings = cloudy_predictor, {"checkpoint": None}
        elif method.get("kind") == "mean":
            predict, settings = mean_fill_predictor, {"checkpoint": None}
        else:
            if seed is None and not method.get("checkpoint"):
                seed = self.seeds(method)[0]
            ckpt = self.checkpoint_of(method, seed)
            record = self._checked_record(method, ckpt)
            model = load_model(ckpt, device=device)
            predict = model_predictor(model)
            settings = {"checkpoint": str(ckpt), "model": getattr(model, "registry_name", None), "seed": seed}
        dataset = self.scored_dataset(record)
        if record is not None:  # the dataset was built from the record: a mismatch here is a bug, not the user's
            check_data_fits(record, dataset.spec, settings["checkpoint"], dataset.preprocessing)
        options = EvalOptions(batch_size=self.batch_size, device=device, save_predictions=True,
                              figure_count=self.figure_count, settings=settings, progress=False)
        evaluate(predict, dataset, self.eval_dir(method, seed), method["name"], options, overwrite=True)

    def check_training_data(self, method: dict[str, Any]) -> None:
        """Before any step: a method's training configuration reads the benchmark's dataset (and, SEN12MS-CR, its
        bands), so that a mismatch is an error now rather than after its training."""
        try:
            config = load_config(method["config"], self._overrides(list(method.get("overrides") or []), Path("RUN")))
            name = (config.get("data") or {}).get("name", "m3rcr")
        except ConfigError:
            # the benchmark's data options may not fit another dataset's section: say which dataset it is
            name = (read_yaml_mapping(method["config"], "configuration").get("data") or {}).get("name", "m3rcr")
            if name == self.dataset:
                raise
        if name != self.dataset:
            raise ConfigError(f"method {method['name']!r}: {method['config']} trains on dataset {name!r}, but the "
                              f"benchmark runs on {self.dataset!r} (data.dataset); use a configuration for "
                              f"{self.dataset}" + (" (configs/sen12mscr/)" if self.dataset == "sen12mscr" else ""))
        record = run_data_record(config) if self.dataset != "m3rcr" else None
        if record is not None and record["optical_bands"] != self.bands():
            raise ConfigError(f"method {method['name']!r}: trains on bands {', '.join(record['optical_bands'])}, but "
                              f"the benchmark scores {', '.join(self.bands())} (data.bands)")

    def complexity(self, method: dict[str, Any]) -> None:
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
        self._train("train:segmentation", seg["config"], list(seg.get("overrides") or []),
                    self.out / "runs" / "segmentation")

    def semantic(self) -> None:
        device = self._device()
        sources: dict[str, Any] = reference_sources()
        figure = {"Cloud-free": "Cloud-free", "Cloudy": "Cloudy"}  # source -> label in Fig. 7
        for m in self.config["methods"]:
            if m.get("kind") == "cloudy":  # the cloudy floor is always the 'Cloudy' row
                continue
            seeds = self.seeds(m)
            for seed in seeds:
                name = semantic_source(m["name"], seed, len(seeds))
                sources[name] = predictions_source(self.eval_dir(m, seed) / "predictions")
            figure[semantic_source(m["name"], seeds[0], len(seeds))] = m["name"]  # Fig. 7 shows the first seed
        options = SemanticOptions(batch_size=self.batch_size, device=device, figure_count=min(self.figure_count, 3),
                                  progress=False, figure_sources=figure)
        semantic_evaluate(load_segmentation_model(self.segmentation_checkpoint(), device=device), self.scored_dataset(),
                          sources, self.out / "semantic", options, overwrite=True)

    def report(self) -> None:
        write_report(self)

    # ------------------------------------------------------------------ the whole run
    def run(self) -> Path:
        """Every step in order; steps an earlier run finished with the same inputs are skipped."""
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "benchmark_config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config, sort_keys=False))
        plan = self.plan()
        self._plan = [name for name, _, _ in plan]
        self._left = {name: None for name, fp, _ in plan if self.done.get(name) != fp}
        self._position = 1
        for name, fp, fn in plan:
            self.step(name, fp, fn)
        self.report()  # always rewritten: cheap, and reflects every finished step
        return self.out

    def plan(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Every step of the benchmark in order: (name, fingerprint of its inputs, what it does)."""
        steps: list[tuple[str, str, Callable[[], Any]]] = []
        data = self.config["data"]
        # M3R-CR's fingerprints are those of before SEN12MS-CR existed: earlier benchmarks resume as they were
        sen12 = () if self.dataset == "m3rcr" else (self.dataset, self.dataset_options)
        steps.append(("data", fingerprint("data", str(self.root), data.get("synth"), *sen12), self.make_data))
        eval_inputs = (str(self.root), self.split, self.crop, self.sar_mode, *sen12)
        methods = self.config["methods"]
        source_fps: dict[str, str] = {}  # per evaluation step: the fingerprint of what it evaluates
        for m in methods:
            if m.get("config") and not m.get("checkpoint"):
                self.check_training_data(m)
        for m in methods:
            if m.get("kind") in ("cloudy", "mean"):
                source_fps[step_name("evaluate", m, None)] = fingerprint(m["kind"])
            elif m.get("checkpoint"):
                source_fps[step_name("evaluate", m, None)] = fingerprint("checkpoint", m["checkpoint"],
                                                                     file_hash(m["checkpoint"]))
            else:
                for seed in self.seeds(m):
                    step = step_name("train", m, seed)
                    fp = self._train_fp(m["config"], list(m.get("overrides") or []), seed)
                    self._resumable[step] = self.started.get(step) == fp
                    steps.append((step, fp, lambda m=m, seed=seed: self.train_method(m, seed)))
                    source_fps[step_name("evaluate", m, seed)] = fp
        for m in methods:
            for seed in self.seeds(m):
                step = step_name("evaluate", m, seed)
                steps.append((step, fingerprint("evaluate", source_fps[step], *eval_inputs),
                              lambda m=m, seed=seed: self.evaluate_method(m, seed)))
        cfg = self.config.get("complexity") or {}
        for m in methods:
            if m.get("kind", "train") == "train":
                first = source_fps[step_name("evaluate", m, self.seeds(m)[0])]
                steps.append((f"complexity:{slug(m['name'])}", fingerprint("complexity", first, cfg),
                              lambda m=m: self.complexity(m)))
        seg = self.config.get("segmentation")
        if seg:
            if seg.get("checkpoint"):
                seg_fp = fingerprint("checkpoint", seg["checkpoint"], file_hash(seg["checkpoint"]))
            else:
                seg_fp = self._train_fp(seg["config"], list(seg.get("overrides") or []))
                self._resumable["train:segmentation"] = self.started.get("train:segmentation") == seg_fp
                steps.append(("train:segmentation", seg_fp, self.train_segmentation))
            steps.append(("semantic", fingerprint("semantic", seg_fp, source_fps, *eval_inputs), self.semantic))
        return steps


def _kind(step: str) -> str:
    return step.split(":", 1)[0]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _processes(config: dict[str, Any]) -> int:
    """How many training processes a configuration asks for (devices x nodes)."""
    trainer = config.get("trainer") or {}
    devices = trainer.get("devices", 1)
    if isinstance(devices, list | tuple):
        n = len(devices)
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        n = int(devices) if int(devices) > 0 else _visible_gpus(trainer)
    elif devices in ("auto", -1):
        n = _visible_gpus(trainer)
    else:
        n = int(devices)
    return max(n, 1) * int(trainer.get("num_nodes", 1) or 1)


def _visible_gpus(trainer: dict[str, Any]) -> int:
    import torch

    if trainer.get("accelerator") == "cpu" or not torch.cuda.is_available():
        return 1
    return torch.cuda.device_count()
