"""Building a dataset: check every scene set, cut each into tiles, write them and ``build.json``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3rcr.data.build.manifest import SPLITS, SceneSet, Split
from m3rcr.data.build.options import BuildOptions
from m3rcr.data.build.reading import SKIP_REASONS, SceneReader, TileArrays
from m3rcr.data.build.splits import assign_splits
from m3rcr.data.build.writing import (
    BuildResult,
    TileRecord,
    is_previous_build,
    scene_metadata,
    write_metadata,
    write_tile,
)
from m3rcr.data.io import grid_bounds
from m3rcr.data.layout import write_csv
from m3rcr.data.scene import bounded_block_cache
from m3rcr.errors import DataError
from m3rcr.utils.files import atomic_dir, check_output

Progress = Callable[[int, int], None]


def build_dataset(
    scenes: Sequence[SceneSet],
    out: str | Path,
    options: BuildOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Cut every scene set into tiles and write a dataset in the official layout to ``out``.

    Writes ``train/``, ``test/``, ``train.csv``, ``test.csv`` (a split without tiles gets neither) and
    ``build.json`` (settings, inputs, every tile's window, bounds, valid fraction and cloud cover, and
    the skipped tiles by reason). Every scene set is opened and checked before anything is written;
    the dataset is built in a hidden folder next to ``out`` and renamed when complete, so a failure
    leaves nothing behind. ``progress(done, total)`` is called after every candidate tile.

    Memory: one tile of every layer at a time, plus GDAL's block cache (at most :data:`m3rcr.data.scene.BLOCK_CACHE_BYTES`
    unless GDAL_CACHEMAX is set).
    """
    with bounded_block_cache():
        return _build(scenes, Path(out), options or BuildOptions(), overwrite=overwrite, progress=progress)


def iter_tiles(scene: SceneSet, options: BuildOptions | None = None
               ) -> Iterator[tuple[int, int, TileArrays | str]]:
    """(row, col, tile or skip reason) for every candidate tile of one scene set, without writing anything."""
    with SceneReader(scene, options or BuildOptions()) as reader:
        for row, col in reader.tiles.origins():
            yield row, col, reader.read_tile(row, col)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_out(scenes: Sequence[SceneSet], out: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds the working folder or an input, or is not an earlier build."""
    if not scenes:
        raise ValueError("no scene sets given")
    if _inside(Path.cwd(), out):
        raise ValueError(f"{out}: is the current folder or holds it; choose a new folder for the dataset")
    check_output(out, overwrite, folder=True)
    if out.exists() and any(out.iterdir()) and not is_previous_build(out):
        raise FileExistsError(f"{out}: is not a dataset written by m3rcr build-dataset (no build.json from "
                              "it); --overwrite only replaces those")
    for s in scenes:
        for p in s.paths().values():
            if out.exists() and _inside(p, out):
                raise ValueError(f"{out}: holds the input {p}; replacing it would delete the input")


@dataclass
class _Run:
    """A build in progress: where tiles go, what has been written, and the progress count."""

    tmp: Path
    options: BuildOptions
    result: BuildResult
    progress: Progress | None
    rows: dict[str, list[list[str]]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    next_patch: Counter = field(default_factory=Counter)  # per season_aoi: sets sharing it continue numbering
    per_scene: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0

    def cut(self, index: int, scene: SceneSet, split: Split, origins: Sequence[tuple[int, int]]) -> None:
        """Read every candidate tile of one scene set and write those that pass the filters."""
        skipped: Counter = Counter()
        size = self.options.tile
        with SceneReader(scene, self.options) as reader:
            for row, col in origins:
                tile = reader.read_tile(row, col)
                if isinstance(tile, str):
                    skipped[tile] += 1
                else:
                    self.next_patch[scene.key] += 1
                    patch = self.next_patch[scene.key]
                    self.rows[split].append(write_tile(reader, tile, self.tmp / split, patch, (row, col)))
                    t_opt, _ = reader.tiles.transforms(row, col)
                    self.result.tiles.append(TileRecord(
                        name=f"{scene.key}_p_{patch}", split=split, scene=index, row=row, col=col, size=size,
                        bounds=grid_bounds(t_opt, (size, size)), valid_fraction=tile.valid_fraction,
                        cloud_cover=tile.cloud_cover))
                self.done += 1
                if self.progress:
                    self.progress(self.done, self.result.considered)
            self.per_scene.append(scene_metadata(reader, index, split, len(origins), skipped))
        self.result.skipped.update(skipped)


def _build(scenes: Sequence[SceneSet], out: Path, options: BuildOptions, *, overwrite: bool,
           progress: Progress | None) -> BuildResult:
    _check_out(scenes, out, overwrite)
    splits = assign_splits(scenes, options.test_fraction, options.seed)
    # check every scene set before writing anything: a bad file late in a manifest fails in seconds
    plans = []
    for s in scenes:
        with SceneReader(s, options) as reader:
            plans.append(reader.tiles.origins())
    result = BuildResult(root=out, considered=sum(len(p) for p in plans))
    with atomic_dir(out) as tmp:
        run = _Run(tmp, options, result, progress)
        for index, (s, origins) in enumerate(zip(scenes, plans)):
            run.cut(index, s, splits[s.aoi], origins)
        if not result.tiles:
            detail = ", ".join(f"{n} {SKIP_REASONS[r]}" for r, n in sorted(result.skipped.items()))
            raise DataError(out, f"no tile passed the filters ({result.considered} considered: {detail}); "
                                 "nothing written")
        for split, split_rows in run.rows.items():
            if split_rows:
                write_csv(tmp / f"{split}.csv", split_rows)
        write_metadata(tmp / "build.json", result, options, splits, scenes, run.per_scene)
    return result
