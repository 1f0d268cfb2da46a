"""The whole benchmark in one command: train (or load) every method, evaluate each on the same split
with the image, NDVI and semantic metrics, measure complexity, and write every table and figure.

A benchmark configuration (``configs/benchmark.yaml``)::

    out: runs/benchmark                  # default output folder (--out overrides)
    data: {root, split: test, crop: null, synth: null}   # synth: {train, test, seed, ...} makes synthetic data if absent
    overrides: [...]                     # applied to every training configuration (e.g. data.root=...)
    seeds: [0, 1, 2]                     # optional: train every method once per seed (mean ± std in every table)
    methods:                             # in table order
      - {name: Cloudy, kind: cloudy}
      - {name: Align-CR, config: configs/aligncr.yaml, overrides: [...], checkpoint: null, seeds: null}
    segmentation: {config: configs/segmentation.yaml, overrides: [...], checkpoint: null}
    complexity: {size: 160, repeats: 3, device: cpu}
    evaluation: {batch_size: 4, device: auto, figure_count: 4, sar_mode: nearest}

The output folder::

    OUT/runs/<method>/seed<k>/ ...    training runs, one per seed (resumed if interrupted)
    OUT/eval/<method>/seed<k>/ ...    m3rcr evaluate folders, with per-image metrics.csv and predictions/*.tif
                                      (OUT/eval/<method>/ for the cloudy floor and methods given as a checkpoint)
    OUT/semantic/ ...                 the semantic evaluation
    OUT/complexity/<method>.json
    OUT/report/                       report.md, results.json, every table (.md, .csv) and figure
    OUT/benchmark_state.json          finished steps: an interrupted benchmark resumes without redoing them

Without ``seeds`` a method is trained once, with the seed of its training configuration. Each step
prints its time and an estimate of the time left (from the steps of the same kind already timed).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from m3rcr.training.config import ConfigError
from m3rcr.utils.files import atomic_path, refuse_replacing

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
    allowed = {"out", "data", "overrides", "seeds", "methods", "segmentation", "complexity", "evaluation"}
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
        _check_seeds(m.get("seeds"), f"{path}: method {m['name']!r}")
        if m.get("seeds") is not None and (kind != "train" or m.get("checkpoint")):
            raise ConfigError(f"{path}: method {m['name']!r}: seeds only apply to methods that are trained")
    _check_seeds(config.get("seeds"), str(path))
    if not (config.get("data") or {}).get("root"):
        raise ConfigError(f"{path}: data.root is required")
    for entry in [*methods, config.get("segmentation") or {}]:
        for key in ("config", "checkpoint"):
            if entry.get(key):
                entry[key] = str(_resolve(entry[key], path, key))
    return config


def _check_seeds(seeds: Any, where: str) -> None:
    if seeds is None:
        return
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in seeds)):
        raise ConfigError(f"{where}: seeds must be a list of distinct whole numbers >= 0, got {seeds!r}")


def _resolve(value: str, config_file: Path, what: str) -> Path:
    """A path from a benchmark configuration: as given (relative to the working directory), else relative
    to the configuration's folder or the folder above it (where ``configs/`` usually lives)."""
    candidates = [Path(value), config_file.parent / value, config_file.parent.parent / value]
    for c in candidates:
        if c.exists():
            return c
    raise ConfigError(f"{config_file}: {what} {value!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts, to tell whether a finished step's inputs have changed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: str | Path | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None


def prepare_out(out: str | Path, overwrite: bool = False, inputs: Sequence[str | Path | None] = ()) -> bool:
    """Check the benchmark folder ``out`` before a run; True when it holds a benchmark to continue.

    A folder holding a benchmark (its state file or configuration) is continued, steps already done being skipped; with
    ``overwrite`` it is deleted and the benchmark starts again. Any other non-empty folder is refused, with
    or without ``overwrite``: it is not this tool's to delete; so is a folder holding one of ``inputs`` (the
    data, given checkpoints) when ``overwrite`` would delete it.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not any((out / name).is_file() for name in (STATE_FILE, "benchmark_config.yaml")):
        raise FileExistsError(f"{out}: exists, is not empty and holds no benchmark ({STATE_FILE}); choose a new "
                              "folder")
    if overwrite:
        refuse_replacing(out, inputs, owned=lambda d: True, kind="benchmark")
        shutil.rmtree(out)
        return False
    return True


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
        from m3rcr.utils.device import resolve_device

        return resolve_device(str(self.device), "evaluation.device")

    # ------------------------------------------------------------------ steps
    def make_data(self) -> None:
        synth = (self.config["data"] or {}).get("synth")
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
        return [f"data.root={self.root}", *(self.config.get("overrides") or []), *overrides, *seed_override,
                f"run.dir={run_dir}"]

    def _train_fp(self, config_path: str, overrides: list[str], seed: int | None = None) -> str:
        return fingerprint("train", config_path, _file_hash(config_path),
                           self._overrides(overrides, Path("RUN"), seed))

    def _train(self, step: str, config_path: str, overrides: list[str], run_dir: Path, seed: int | None = None) -> None:
        """Train, or continue a run this same step started and did not finish (same inputs)."""
        from m3rcr.training.config import load_config
        from m3rcr.training.run import STATE, train

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
        if method.get("kind") == "cloudy" or method.get("checkpoint"):
            return [None]
        seeds = method.get("seeds") or self.config.get("seeds")
        if seeds:
            return list(seeds)
        if method["name"] not in self._config_seed:
            from m3rcr.training.config import load_config

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

    def _dataset(self):
        from m3rcr.data import M3RCRDataset

        return M3RCRDataset(self.root, self.split, sar_mode=self.sar_mode,
                            landcover_mode="geo" if self.sar_mode == "geo" else "nearest", crop_size=self.crop,
                            crop="center")

    def evaluate_method(self, method: dict[str, Any], seed: int | None = None) -> None:
        from m3rcr.evaluation.evaluate import cloudy_predictor, evaluate, model_predictor
        from m3rcr.models import load_model

        device = self._device()
        if method.get("kind") == "cloudy":
            predict, settings = cloudy_predictor, {"checkpoint": None}
        else:
            if seed is None and not method.get("checkpoint"):
                seed = self.seeds(method)[0]
            ckpt = self.checkpoint_of(method, seed)
            model = load_model(ckpt, device=device)
            predict = model_predictor(model)
            settings = {"checkpoint": str(ckpt), "model": getattr(model, "registry_name", None), "seed": seed}
        evaluate(predict, self._dataset(), self.eval_dir(method, seed), method["name"],
                 batch_size=self.batch_size, device=device, save_predictions=True,
                 figure_count=self.figure_count, settings=settings, progress=False, overwrite=True)

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
        self._train("train:segmentation", seg["config"], list(seg.get("overrides") or []),
                    self.out / "runs" / "segmentation")

    def semantic(self) -> None:
        from m3rcr.evaluation.semantic import predictions_source, semantic_evaluate
        from m3rcr.models import load_segmentation_model

        device = self._device()
        sources: dict[str, Any] = {"Cloud-free": lambda b: b["cloudfree"], "Cloudy": lambda b: b["cloudy"]}
        figure = {"Cloud-free": "Cloud-free", "Cloudy": "Cloudy"}  # source -> label in Fig. 7
        for m in self.config["methods"]:
            if m.get("kind") == "cloudy":  # the cloudy floor is always the 'Cloudy' row
                continue
            seeds = self.seeds(m)
            for seed in seeds:
                name = semantic_source(m["name"], seed, len(seeds))
                sources[name] = predictions_source(self.eval_dir(m, seed) / "predictions")
            figure[semantic_source(m["name"], seeds[0], len(seeds))] = m["name"]  # Fig. 7 shows the first seed
        semantic_evaluate(load_segmentation_model(self.segmentation_checkpoint(), device=device), self._dataset(),
                          sources, self.out / "semantic", batch_size=self.batch_size, device=device,
                          figure_count=min(self.figure_count, 3), progress=False, figure_sources=figure,
                          overwrite=True)

    def report(self) -> None:
        from m3rcr.reports.benchmark import write_report

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
        steps.append(("data", fingerprint("data", str(self.root), data.get("synth")), self.make_data))
        eval_inputs = (str(self.root), self.split, self.crop, self.sar_mode)
        methods = self.config["methods"]
        source_fps: dict[str, str] = {}  # per evaluation step: the fingerprint of what it evaluates
        for m in methods:
            if m.get("kind") == "cloudy":
                source_fps[step_name("evaluate", m, None)] = fingerprint("cloudy")
            elif m.get("checkpoint"):
                source_fps[step_name("evaluate", m, None)] = fingerprint("checkpoint", m["checkpoint"],
                                                                     _file_hash(m["checkpoint"]))
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
                seg_fp = fingerprint("checkpoint", seg["checkpoint"], _file_hash(seg["checkpoint"]))
            else:
                seg_fp = self._train_fp(seg["config"], list(seg.get("overrides") or []))
                self._resumable["train:segmentation"] = self.started.get("train:segmentation") == seg_fp
                steps.append(("train:segmentation", seg_fp, self.train_segmentation))
            steps.append(("semantic", fingerprint("semantic", seg_fp, source_fps, *eval_inputs), self.semantic))
        return steps


def semantic_source(method: str, seed: int | None, runs: int) -> str:
    """The name of one run of a method in the semantic evaluation ("Align-CR", or "Align-CR [seed 1]")."""
    return method if runs == 1 or seed is None else f"{method} [seed {seed}]"


def step_name(kind: str, method: dict[str, Any], seed: int | None) -> str:
    """A step's name: ``train:align-cr:seed0``; without a seed (cloudy floor, given checkpoint) ``evaluate:cloudy``."""
    return f"{kind}:{slug(method['name'])}" + ("" if seed is None else f":seed{seed}")


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
