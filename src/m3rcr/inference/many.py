"""Prediction over many scenes, sharded over processes: one per device, on one node or many.

A scene list comes from a manifest (:func:`read_manifest`: CSV, YAML or JSON with ``cloudy``, ``out`` and
optionally ``sar`` and ``mask``) or from repeated command-line flags (:func:`jobs_from_flags`), and is
checked whole before anything runs (:func:`check_jobs`). Process ``r`` of ``n`` takes scenes ``r``,
``r + n``, ``r + 2n``, ... of the list (:func:`shard`), so a rerun gives every process the same scenes.
Each output is written by :func:`~m3rcr.inference.predict.predict_scene` (temporary name, then
rename); a rerun skips outputs that are complete (:func:`output_state`) and predicts the rest again.
Processes are started by Lightning Fabric (:func:`run_sharded`), or by ``torchrun``, whose environment
Fabric reads; they only meet at the end, to gather the summary.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from m3rcr.errors import DataError
from m3rcr.inference.predict import PredictOptions, predict_scene
from m3rcr.utils.files import OutputExistsError

MANIFEST_COLUMNS = ("cloudy", "sar", "out", "mask")
_REQUIRED = ("cloudy", "out")
# a process that finishes its shard early waits for the others at the summary: hours, not the default 30 min
_GATHER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class SceneJob:
    """One scene to predict; ``where`` names it in messages (``scenes.csv, row 3``)."""

    cloudy: Path
    out: Path
    sar: Path | None = None
    mask: Path | None = None
    where: str = ""

    def inputs(self) -> dict[str, Path]:
        """The scene's input files by role."""
        found = {"cloudy": self.cloudy, "sar": self.sar, "mask": self.mask}
        return {role: path for role, path in found.items() if path is not None}


# --------------------------------------------------------------------------- the scene list
def read_manifest(path: str | Path) -> list[SceneJob]:
    """The scenes of a manifest: a ``.csv`` file with a header row, or a ``.yaml``/``.yml``/``.json`` list of
    mappings; keys ``cloudy`` and ``out`` (required), ``sar`` and ``mask`` (optional, may be empty). Relative
    paths are relative to the manifest's folder. A malformed manifest is a DataError naming the file and row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "manifest file not found" if not path.exists() else "manifest is not a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix in (".yaml", ".yml", ".json"):
        rows = _listed_rows(path)
    else:
        raise DataError(path, "a manifest is a .csv, .yaml, .yml or .json file")
    if not rows:
        raise DataError(path, "the manifest lists no scene")
    return [_job(row, f"{path}, row {i}", path.parent) for i, row in enumerate(rows, 1)]


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in reader.fieldnames or []]
        _check_keys(header, str(path), "column")
        rows = []
        for i, row in enumerate(reader, 1):
            if None in row:  # more cells than the header names
                raise DataError(f"{path}, row {i}", f"has {len(header) + len(row[None])} cells, the header "
                                                    f"{len(header)}")
            rows.append({k.strip(): v for k, v in row.items()})
    return rows


def _listed_rows(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DataError(path, f"cannot be parsed: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise DataError(path, "must be a list of scenes, each a mapping with keys cloudy, out and optionally sar, "
                              "mask")
    for i, row in enumerate(rows, 1):
        _check_keys(list(row), f"{path}, row {i}", "key")
    return [dict(r) for r in rows]


def _check_keys(keys: Sequence[str], where: str, kind: str) -> None:
    unknown = [k for k in keys if k not in MANIFEST_COLUMNS]
    if unknown:
        raise DataError(where, f"unknown {kind}(s) {', '.join(map(repr, unknown))}; the {kind}s are "
                               f"{', '.join(MANIFEST_COLUMNS)}")
    missing = [k for k in _REQUIRED if k not in keys]
    if missing:
        raise DataError(where, f"no {kind} {' or '.join(missing)} (needed: {', '.join(_REQUIRED)})")


def _job(row: Mapping[str, Any], where: str, base: Path) -> SceneJob:
    values: dict[str, Path | None] = {}
    for key in MANIFEST_COLUMNS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise DataError(where, f"{key} must be a path, got {value!r}")
        value = (value or "").strip()
        if not value and key in _REQUIRED:
            raise DataError(where, f"{key} is empty")
        values[key] = base / value if value else None  # an absolute value replaces the base
    return SceneJob(values["cloudy"], values["out"], values["sar"], values["mask"], where)


def jobs_from_flags(cloudy: Sequence[str], out: Sequence[str], sar: Sequence[str] | None = None,
                    mask: Sequence[str] | None = None) -> list[SceneJob]:
    """Scenes from repeated ``--cloudy``/``--out`` (and ``--sar``/``--mask``) flags, matched by position."""
    n = len(cloudy)
    if len(out) != n:
        raise ValueError(f"{n} --cloudy but {len(out)} --out: give one --out per --cloudy, in the same order")
    for flag, given in (("--sar", sar), ("--mask", mask)):
        if given and len(given) != n:
            raise ValueError(f"{n} --cloudy but {len(given)} {flag}: give one {flag} per --cloudy, in the same "
                             f"order (or no {flag})")
    return [SceneJob(Path(c), Path(o), Path(sar[i]) if sar else None, Path(mask[i]) if mask else None,
                     f"scene {i + 1} (--cloudy {c})") for i, (c, o) in enumerate(zip(cloudy, out))]


def check_jobs(jobs: Sequence[SceneJob]) -> None:
    """Refuse a scene list with a missing input, an output that is not a .tif, a folder or another scene's
    output, or an output that is an input of any scene; one DataError lists every problem, each with its row."""
    problems: list[str] = []
    inputs: dict[Path, str] = {}
    for job in jobs:
        for role, path in job.inputs().items():
            inputs.setdefault(path.resolve(), f"the {role} input of {job.where}")
            if not path.is_file():
                problems.append(f"{job.where}: {role} {path}: " + ("is not a file" if path.exists() else "not found"))
    outputs: dict[Path, str] = {}
    for job in jobs:
        key = job.out.resolve()
        if job.out.suffix.lower() not in (".tif", ".tiff"):
            problems.append(f"{job.where}: out {job.out}: the output is a GeoTIFF; give it a .tif name")
        elif job.out.is_dir():
            problems.append(f"{job.where}: out {job.out}: is a folder; give a file name")
        if key in outputs:
            problems.append(f"{job.where}: out {job.out}: is also the output of {outputs[key]}")
        outputs.setdefault(key, job.where)
        if key in inputs:
            problems.append(f"{job.where}: out {job.out}: is {inputs[key]}; it would be overwritten")
    if len(problems) == 1:
        where, _, problem = problems[0].partition(": ")
        raise DataError(where, problem)
    if problems:
        raise DataError("the scene list", f"{len(problems)} problems:\n  " + "\n  ".join(problems))


def shard(n: int, rank: int, world: int) -> list[int]:
    """The positions (0-based) of the scenes process ``rank`` of ``world`` predicts: every world-th one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(range(rank, n, world))


# --------------------------------------------------------------------------- existing outputs
def output_state(job: SceneJob, n_bands: int, checkpoint: str | Path | None = None) -> tuple[str, str]:
    """What to do with ``job.out``: ``("missing", "")``; ``("complete", "")`` (skip it); ``("incomplete", why)``
    (predict it again: it does not open, a block does not decode, or its grid, bands or dtype are not what the
    scene gives); ``("foreign", why)`` (a readable file that is not this scene's prediction with this checkpoint:
    left alone unless overwriting).

    Complete: it opens, carries the ``M3RCR_PREDICT`` metadata naming the same cloudy file (and checkpoint file,
    when given), has ``n_bands`` bands and the cloudy scene's size, CRS, transform and dtype, and every block
    of every band (and of its mask) decodes. Outputs only appear under their name once complete, so this
    catches files truncated or damaged afterwards (a copy that stopped, a full disk)."""
    import rasterio
    from rasterio.errors import RasterioError

    if not job.out.exists():
        return "missing", ""
    try:
        with rasterio.open(job.out) as dst:
            tag = dst.tags().get("M3RCR_PREDICT")
            if tag is None:
                return "foreign", "is not an m3rcr prediction (no M3RCR_PREDICT metadata)"
            settings = json.loads(tag)
            _decode_every_block(dst)
            with rasterio.open(job.cloudy) as src:
                expected = (n_bands, src.height, src.width, src.crs, src.transform, src.dtypes[0])
            found = (dst.count, dst.height, dst.width, dst.crs, dst.transform, dst.dtypes[0])
            if found != expected:
                return "incomplete", (f"has {found[0]} band(s) of {found[1]} x {found[2]} {found[5]} pixels; the "
                                      f"scene gives {expected[0]} of {expected[1]} x {expected[2]} {expected[5]}"
                                      + (" (or another CRS or transform)" if found[:3] == expected[:3] else ""))
            other = _other_source(settings, job, checkpoint)
            if other:
                return "foreign", other
    except (RasterioError, json.JSONDecodeError, OSError) as exc:
        cause = exc.__cause__ or exc  # rasterio's "Read failed" carries GDAL's reason as its cause
        return "incomplete", f"is damaged or truncated ({cause})"
    return "complete", ""


def _other_source(settings: Mapping[str, Any], job: SceneJob, checkpoint: str | Path | None) -> str:
    """Why the recorded settings are not this scene's (file names compared: paths differ across nodes)."""
    cloudy = Path(str(settings.get("cloudy"))).name
    if cloudy != job.cloudy.name:
        return f"was predicted from another scene ({cloudy})"
    recorded = settings.get("checkpoint")
    if checkpoint is not None and recorded and Path(recorded).name != Path(checkpoint).name:
        return f"was predicted with another checkpoint ({recorded})"
    return ""


def _decode_every_block(dst: Any) -> None:
    """Read every full-resolution block (and the internal mask's): a truncated file fails here."""
    has_mask = any(flag.name == "per_dataset" for flag in dst.mask_flag_enums[0])
    for _, window in dst.block_windows(1):
        dst.read(window=window)
        if has_mask:
            dst.read_masks(1, window=window)


def remove_leftovers(out: Path) -> list[Path]:
    """Delete the temporary files a killed run left next to ``out`` (``.NAME.XXXXXXXX.tmp.tif``, its work file
    and side-cars); returns them. Only the process that owns the scene calls this."""
    pattern = re.compile(rf"\.{re.escape(out.stem)}\.[a-z0-9_]{{8}}\.tmp(\.work)?{re.escape(out.suffix)}"
                         r"(\.msk|\.aux\.xml)?")
    if not out.parent.is_dir():
        return []
    found = [p for p in out.parent.iterdir() if pattern.fullmatch(p.name)]
    for p in found:
        p.unlink(missing_ok=True)
    return found


# --------------------------------------------------------------------------- one process's share
@dataclass
class SceneResult:
    """What happened to one scene: ``done``, ``skipped`` (complete already) or ``failed`` (``detail`` says why)."""

    index: int  #: 0-based position in the scene list
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ProcessReport:
    """One process's scenes, gathered into the summary."""

    rank: int
    world: int
    host: str
    device: str
    results: list[SceneResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Scenes with this status."""
        return sum(r.status == status for r in self.results)


@dataclass(frozen=True)
class ShardRun:
    """How a process predicts its scenes: the options (``mask`` set per scene), the checkpoint recorded in
    the outputs, whether existing outputs are replaced, progress bars, and where lines are printed."""

    options: PredictOptions
    n_bands: int
    checkpoint: str | Path | None = None
    overwrite: bool = False
    progress: bool = False
    log: Callable[[str], None] = print


def predict_shard(model: nn.Module, jobs: Sequence[SceneJob], indices: Sequence[int], run: ShardRun,
                  report: ProcessReport) -> ProcessReport:
    """Predict the scenes at ``indices`` one by one into ``report``; a failing scene is recorded and the next
    one starts."""
    start = time.perf_counter()
    for i in indices:
        report.results.append(_one_scene(model, jobs[i], i, run))
    report.seconds = time.perf_counter() - start
    return report


def _one_scene(model: nn.Module, job: SceneJob, index: int, run: ShardRun) -> SceneResult:
    start = time.perf_counter()
    try:
        remove_leftovers(job.out)
        state, why = ("missing", "") if run.overwrite else output_state(job, run.n_bands, run.checkpoint)
        if state == "complete":
            run.log(f"{job.where}: {job.out} is complete: skipped")
            return SceneResult(index, "skipped", "complete", time.perf_counter() - start)
        if state == "foreign":
            raise OutputExistsError(job.out, f"exists and {why}")
        if state == "incomplete":
            run.log(f"{job.where}: {job.out} {why}: predicting it again")
        options = replace(run.options, mask=job.mask)
        stats = predict_scene(model, job.cloudy, job.out, job.sar, options,
                              overwrite=run.overwrite or state != "missing", progress=run.progress,
                              checkpoint=run.checkpoint)
    except Exception as exc:  # noqa: BLE001 - one scene's failure, whatever it is, must not stop the others
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # after an out-of-memory error, the next scene starts with free memory
        detail = exc.cli_message() if isinstance(exc, OutputExistsError) else _describe(exc)
        run.log(f"{job.where}: failed: {detail}")
        return SceneResult(index, "failed", detail, time.perf_counter() - start)
    compiled = stats.compile or {}
    took = f" (torch.compile: {compiled['seconds']:.1f} s of it)" if compiled.get("compiles") else ""
    run.log(f"{job.where}: wrote {job.out}: {stats.tiles_run} of {stats.tiles} tiles, {stats.seconds:.1f} s"
            + took)
    for note in stats.notes():
        run.log(f"{job.where}: {note}")
    return SceneResult(index, "done", "", time.perf_counter() - start)


def _describe(exc: BaseException) -> str:
    from rasterio.errors import RasterioError

    if isinstance(exc, DataError | ValueError | OSError | RasterioError):
        return str(exc)  # bad input: the message says it all
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- processes
def predict_many(checkpoint: str | Path, jobs: Sequence[SceneJob], run: ShardRun, devices: int = 1,
                 num_nodes: int = 1, accelerator: str = "auto") -> list[ProcessReport] | None:
    """Predict every scene of ``jobs`` with the model of ``checkpoint``: in this process on ``run.options.device``
    (one device, one node), else sharded over ``devices`` processes per node on ``num_nodes`` nodes
    (:func:`run_sharded`), each process taking its own device. Returns every process's report in process 0,
    None in the others."""
    from m3rcr.models import load_model

    def work(rank: int, world: int, device: torch.device) -> ProcessReport:
        prefix = f"[process {rank}/{world}] " if world > 1 else ""
        mine = replace(run, options=replace(run.options, device=device),
                       log=lambda line: run.log(prefix + line))
        model = load_model(checkpoint, device)
        return predict_shard(model, jobs, shard(len(jobs), rank, world), mine, new_report(rank, world, device))

    if devices * num_nodes == 1:
        return [work(0, 1, torch.device(run.options.device))]
    return run_sharded(work, devices, num_nodes, accelerator)


def torchrun_world() -> tuple[int, int] | None:
    """(processes per node, nodes) when this process was started by torchrun, else None."""
    from lightning.fabric.plugins.environments import TorchElasticEnvironment

    if not TorchElasticEnvironment.detect():
        return None
    local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
    return local, max(1, world // local)


def run_sharded(work: Callable[[int, int, torch.device], ProcessReport], devices: int, num_nodes: int = 1,
                accelerator: str = "auto") -> list[ProcessReport] | None:
    """Run ``work(rank, world, device)`` in ``devices`` processes on each of ``num_nodes`` nodes, started by
    Lightning Fabric (DDP: gloo on CPU, NCCL on CUDA), or those torchrun started; returns every process's
    report in process 0, None in the others.

    Fabric starts the other processes of a node by running this process's command line again (with
    ``LOCAL_RANK`` set): call it from a command, not from an interactive session.
    """
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                    strategy=DDPStrategy(timeout=_GATHER_TIMEOUT))
    return fabric.launch(_in_process, work)


def _in_process(fabric: Any, work: Callable[[int, int, torch.device], ProcessReport]) -> list[ProcessReport] | None:
    import torch.distributed as dist

    report = work(fabric.global_rank, fabric.world_size, fabric.device)
    reports: list[Any] = [None] * fabric.world_size
    try:
        dist.all_gather_object(reports, report)
    finally:
        # a process group left to the interpreter's exit can abort it ("terminate called without an active
        # exception" from gloo's threads, seen once in CI under load): the summary is gathered, close it now
        if dist.is_initialized():
            dist.destroy_process_group()
    return reports if fabric.global_rank == 0 else None


def new_report(rank: int, world: int, device: torch.device | str) -> ProcessReport:
    """An empty report for this process."""
    return ProcessReport(rank, world, socket.gethostname(), str(device))


def summary(reports: Sequence[ProcessReport], jobs: Sequence[SceneJob]) -> list[str]:
    """The end-of-run lines: totals, one line per process, and each failed scene with its reason."""
    results = [r for rep in reports for r in rep.results]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    lines = [(f"{len(jobs)} scene(s) on {len(reports)} process(es): {counts['done']} done, {counts['skipped']} "
              f"skipped (complete already), {counts['failed']} failed")]
    for rep in sorted(reports, key=lambda r: r.rank):
        lines.append(f"  process {rep.rank} ({rep.host}, {rep.device}): {rep.count('done')} done, "
                     f"{rep.count('skipped')} skipped, {rep.count('failed')} failed, {rep.seconds:.1f} s")
    for r in sorted(results, key=lambda r: r.index):
        if r.status == "failed":
            lines.append(f"failed: {jobs[r.index].where}: {r.detail}")
    return lines
