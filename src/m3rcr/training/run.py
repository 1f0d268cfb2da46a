"""Training runs: build everything from a configuration, record it, train, resume.

A run folder holds::

    RUN/config.yaml           the resolved configuration
    RUN/data.json             what the model is trained on: dataset, band names, preprocessing (as the
                              checkpoints' meta["data"]; cloud-removal runs)
    RUN/environment.json      versions, git commit, command line, host, start time (one entry per start)
    RUN/checkpoints/last.ckpt, best.ckpt   the model in the m3rcr checkpoint format (m3rcr.load_model)
    RUN/state/last.ckpt       the full training state for --resume (weights, optimiser, scheduler,
                              epoch, loops, random generators); loaded with weights_only=True
    RUN/logs/csv/metrics.csv, RUN/logs/tensorboard/   CSV and TensorBoard logs
    RUN/training_curves.png   training and validation loss, validation PSNR (or mIoU) per epoch
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import lightning_utilities.core.rank_zero
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from m3rcr.data import DataOptions
from m3rcr.data.datamodule import CloudRemovalDataModule
from m3rcr.data.datasets import DATASETS, DatasetSpec
from m3rcr.errors import DataError
from m3rcr.models.base import ModelSpec
from m3rcr.models.checkpoint import data_record
from m3rcr.training.callbacks import (
    ExportCheckpoints,
    ProgressLog,
    RNGState,
    SaveTrainingState,
    TrainingCurves,
)
from m3rcr.training.config import ConfigError, dump, load_config, parse_config
from m3rcr.training.module import CloudRemovalModule, GANModule, SegmentationModule
from m3rcr.training.settings import TrainConfig
from m3rcr.utils.files import atomic_path
from m3rcr.utils.progress import is_terminal
from m3rcr.utils.provenance import environment

STATE = Path("state") / "last.ckpt"
#: what :func:`build` trains: a segmentation network, a GAN, or any other cloud-removal network
TrainingModule = CloudRemovalModule | GANModule | SegmentationModule

# Lightning 2.6 on torch 2.14 warns about its own use of a deprecated torch API at every epoch
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# ResumableCSVLogger keeps the log that this warning says will be deleted
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty.*")
# said once per loader in terms of DataLoader arguments; _hint_workers says it once in terms of data.num_workers
warnings.filterwarnings("ignore", message=r"The '\w+_dataloader' does not have many workers.*")
# epoch values are logged whatever this interval; Lightning's advice only concerns per-step rows (short demos)
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging interval.*")
#: seconds between two plain progress lines when the output is not a terminal
PROGRESS_INTERVAL = 60.0


class _DropLitLoggerTip(logging.Filter):
    """Lightning advertises its cloud logger every time a Trainer is created (each run of a benchmark):
    an advertisement, not information about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_TIP_FILTER = _DropLitLoggerTip()
# the logger through which Lightning's rank_zero_info writes (lightning.pytorch.utilities.rank_zero)
lightning_utilities.core.rank_zero.log.addFilter(_TIP_FILTER)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger, except that with ``resume`` it continues the run's ``metrics.csv``: Lightning's
    writer deletes an existing file when it starts, which lost every epoch before a ``--resume``."""

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume = resume

    @property
    def experiment(self) -> Any:
        if self._experiment is not None or rank_zero_only.rank != 0 or not self.resume:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        header: list[str] = []
        rows: list[dict[str, str]] = []
        if path.is_file():
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                header, rows = list(reader.fieldnames or []), list(reader)
        writer = super().experiment  # removes metrics.csv
        if header:
            with open(path, "w", newline="") as fh:
                out = csv.DictWriter(fh, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = sorted(header)  # the writer extends this header with new keys, then appends
        return writer


@rank_zero_only
def _record(run_dir: Path, config: dict[str, Any], data: dict[str, Any] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(dump(config))
    if data is not None:
        with atomic_path(run_dir / "data.json") as tmp:
            tmp.write_text(json.dumps(data, indent=1))
    env_file = run_dir / "environment.json"
    history = json.loads(env_file.read_text()) if env_file.is_file() else []
    history.append(environment())
    with atomic_path(env_file) as tmp:
        tmp.write_text(json.dumps(history, indent=1))


def _trainer(cfg: TrainConfig, run_dir: Path, strategy: Any = None, resume: bool = False,
             data: dict[str, Any] | None = None) -> L.Trainer:
    tcfg = dict(cfg.trainer)
    if cfg.gan is not None:
        tcfg.pop("gradient_clip_val", None)  # manual optimisation: the GAN module clips itself
    if strategy is not None:
        tcfg["strategy"] = strategy
    state = SaveTrainingState(run_dir / STATE, cfg.run.checkpoint_every_n_steps)
    monitor = "val/miou" if cfg.task == "segmentation" else "val/psnr"
    callbacks = [state, ExportCheckpoints(run_dir / "checkpoints", monitor=monitor, data=data), RNGState(),
                 LearningRateMonitor(logging_interval="epoch"), TrainingCurves(run_dir / "training_curves.png")]
    stop = cfg.run.early_stopping
    if stop is not None:
        # checked at the end of each training epoch, after validation, like the checkpoints above
        callbacks.append(EarlyStopping(monitor=stop.monitor, mode=stop.mode, patience=stop.patience,
                                       min_delta=stop.min_delta, check_on_train_epoch_end=True, strict=True,
                                       verbose=False))
    # Lightning's bar redraws itself on stdout with carriage returns: only on a terminal; in a log, plain lines
    bar = cfg.run.progress_bar and is_terminal(sys.stdout)
    if cfg.run.progress_bar and not bar:
        callbacks.append(ProgressLog(PROGRESS_INTERVAL))
    loggers = [ResumableCSVLogger(run_dir / "logs", name="csv", version="", resume=resume),
               TensorBoardLogger(run_dir / "logs", name="tensorboard", version="")]
    return L.Trainer(**tcfg, default_root_dir=run_dir, callbacks=callbacks, logger=loggers, enable_progress_bar=bar)


def _module(cfg: TrainConfig) -> TrainingModule:
    """The LightningModule of a configuration: the task and the gan section choose it."""
    if cfg.task == "segmentation":
        return SegmentationModule(cfg.model, cfg.optim, cfg.schedule)
    if cfg.gan is not None:
        return GANModule(cfg.model, cfg.loss, cfg.gan, cfg.optim, cfg.schedule, cfg.trainer.get("gradient_clip_val"))
    return CloudRemovalModule(cfg.model, cfg.loss, cfg.optim, cfg.schedule)


@rank_zero_only
def _hint_workers(num_workers: int, trainer: L.Trainer) -> None:
    from lightning.fabric.utilities.data import suggested_max_num_workers

    suggested = suggested_max_num_workers(trainer.num_devices)  # CPU cores per process, less one
    if num_workers < 2 <= suggested:
        print(f"note: data.num_workers={num_workers}: loading the data may slow training down; this machine "
              f"has cores for up to data.num_workers={suggested}", file=sys.stderr, flush=True)


def _data_options(cfg: TrainConfig) -> DataOptions:
    # the validation hold-out follows the experiment's seed
    return DataOptions.from_section({**cfg.data, "seed": cfg.seed})


def data_of(options: DataOptions) -> tuple[DatasetSpec, dict[str, Any] | None]:
    """The spec of the items the data options give (band names and roles after the dataset's own options, e.g.
    SEN12MS-CR's ``bands``) and what a checkpoint records of them (:func:`~m3rcr.models.checkpoint.data_record`,
    with the value convention the dataset applies, its default included), from a dataset of no files: nothing is
    read."""
    try:
        dataset = DATASETS.build(options.name, root=options.root, split=options.splits.train_split, files=[],
                                 **options.dataset)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data: {exc}") from None
    return dataset.spec, data_record(dataset.spec, {"preprocessing": getattr(dataset, "preprocessing", None)})


def run_data_record(config: dict[str, Any]) -> dict[str, Any] | None:
    """What a cloud-removal run's checkpoints record of its data (:func:`m3rcr.models.checkpoint.data_record`);
    None for segmentation runs."""
    cfg = parse_config(config)
    if cfg.task == "segmentation":
        return None
    return data_of(_data_options(cfg))[1]


def build(config: dict[str, Any], run_dir: Path, resume: bool = False, setup_data: bool = False
          ) -> tuple[L.Trainer, TrainingModule, CloudRemovalDataModule]:
    """Trainer, module and data for a configuration (``resume``: continuing the run in ``run_dir``).

    The module, and with ``setup_data`` the data lists, are made before the Trainer, so that a bad setting
    fails with its own message before Lightning prints its banner.
    """
    cfg = parse_config(config)
    module = _module(cfg)
    options = _data_options(cfg)
    batch = options.batching.batch_size
    datamodule = CloudRemovalDataModule(options)
    record = None
    if not isinstance(module, SegmentationModule):  # a cloud-removal run
        spec, record = data_of(options)
        check_bands(module.net.spec, spec, cfg.model.name)
        module.reflectance_per_unit = spec.reflectance_per_unit  # validation metrics on reflectance
    if setup_data:
        datamodule.setup("fit")  # bad data fails here, before anything is written to the run folder
    trainer = _trainer(cfg, run_dir, resume=resume, data=record)
    if trainer.world_size > 1 and cfg.trainer.get("strategy") in ("auto", "ddp", None):
        # Align-CR's last SAR update feeds nothing (as in the authors' network): DDP must allow it
        trainer = _trainer(cfg, run_dir, DDPStrategy(find_unused_parameters=True), resume=resume, data=record)
    if batch % trainer.world_size:
        raise ConfigError(f"data.batch_size {batch} (the global batch) does not split over {trainer.world_size} "
                          f"processes")
    # each process loads its share of the global batch (the number of processes is the Trainer's to find)
    datamodule.use_batch_size(batch // trainer.world_size)
    if setup_data and datamodule.val_dataset is None:
        # no validation data (val_fraction 0): skip the loop rather than hand Lightning an empty loader
        trainer.limit_val_batches = 0
    _hint_workers(options.batching.num_workers, trainer)
    return trainer, module, datamodule


def check_bands(model: ModelSpec, data: DatasetSpec, name: str = "model") -> None:
    """Refuse a model whose input bands are not the dataset's (a 4-band model on 13-band data, say); ``data`` is
    the spec of the items as configured (SEN12MS-CR's picked ``bands``), ``name`` the model's, for the message."""
    optical, sar = len(data.optical_bands), len(data.sar_bands)
    if model.optical_in != optical or model.optical_out != optical:
        hint = (f"set model.config.in_channels and out_channels to {optical}"
                + (" (configs/sen12mscr/ holds 13-band configurations)" if data.name == "sen12mscr" and optical == 13
                   else "")
                + (f", or pick {model.optical_in} bands with data.bands" if _takes_bands(data.name) else ""))
        raise ConfigError(f"model: {name} reads {model.optical_in} and writes {model.optical_out} optical bands, but "
                          f"dataset {data.name!r} has {optical} ({', '.join(data.optical_bands)}); {hint}")
    if model.uses_sar and model.sar_bands != sar:
        raise ConfigError(f"model: fuses {model.sar_bands} SAR bands, but dataset {data.name!r} has {sar} "
                          f"({', '.join(data.sar_bands)})")


def _takes_bands(dataset: str) -> bool:
    """Whether a registered dataset picks its optical bands by option (SEN12MS-CR's ``bands``)."""
    return dataset in DATASETS and "bands" in DATASETS.entry(dataset).parameters()


def check_data_root(config: dict[str, Any]) -> None:
    """Refuse a ``data.root`` that is not a folder, naming the setting (the default is a placeholder)."""
    options = DataOptions.from_section(config["data"])
    root = Path(options.root)
    if not root.is_dir():
        what = "a folder with train/ and train.csv" if options.name == "m3rcr" else f"the {options.name} dataset folder"
        raise DataError(root, f"no such dataset folder; set data.root=PATH ({what})")


def train(config: dict[str, Any] | None = None, *, resume: str | Path | None = None,
          overrides: tuple[str, ...] | list[str] = (), task: str | None = None) -> Path:
    """Train from a configuration, or continue the run in folder ``resume``; return the run folder.

    When resuming, the run's saved configuration is used (``overrides`` may change it, e.g. to train
    for more epochs), and training continues from the last saved state. ``task``, if given, is the only task
    the configuration (new or resumed) may have.
    """
    ckpt_path = None
    if resume is not None:
        run_dir = Path(resume)
        ckpt_path = run_dir / STATE
        if not ckpt_path.is_file():
            raise ConfigError(f"{run_dir}: no saved training state ({STATE}) to resume from")
        config = load_config(run_dir / "config.yaml", overrides)
    else:
        if config is None:
            raise ValueError("give a configuration or a run to resume")
        run_dir = Path(config["run"]["dir"])
        if (run_dir / STATE).exists():
            raise ConfigError(f"{run_dir}: a run already exists there; resume it with --resume {run_dir} or choose "
                              f"another run.dir")
    if task is not None and config["task"] != task:
        where = run_dir if resume is not None else "the configuration"
        raise ConfigError(f"{where}: not a {task.replace('_', '-')} run (task: {config['task']})")
    check_data_root(config)
    L.seed_everything(config["seed"], workers=True, verbose=False)
    trainer, module, datamodule = build(config, run_dir, resume=ckpt_path is not None, setup_data=True)
    exports = [c for c in trainer.callbacks if isinstance(c, ExportCheckpoints)]
    _record(run_dir, config, exports[0].data if exports else None)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    return run_dir
