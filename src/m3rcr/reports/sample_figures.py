"""Figures of dataset items as PNG files: one item to ``OUT.png``, several into the folder ``OUT``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from m3rcr.data.datasets import CloudRemovalDataset
from m3rcr.data.plot import Stretch
from m3rcr.reports.figures import DPI, save_figure
from m3rcr.utils.files import check_output

#: picture formats other than PNG that a user may name by mistake (refused, rather than a PNG under that name)
OTHER_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".svg", ".gif", ".bmp", ".webp"})


def sample_figure_paths(dataset: CloudRemovalDataset, indices: Sequence[int], out: str | Path) -> dict[int, Path]:
    """Where each item's figure goes: ``out`` itself for one item and a ``.png`` name, else
    ``out/<split>_<index>_<name>.png``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in OTHER_IMAGE_SUFFIXES:
        raise ValueError(f"--out {out}: pictures are written as PNG; give a .png file (one sample) or a folder")
    if len(indices) > 1 and suffix == ".png":
        raise ValueError(f"--out {out}: {len(indices)} samples go into a folder; give a folder name, "
                         "or one sample for a .png file")
    if suffix == ".png":
        return {indices[0]: out}
    names = dataset.names
    return {i: out / f"{dataset.split}_{i:04d}_{names[i]}.png" for i in indices}


def write_sample_figures(dataset: CloudRemovalDataset, indices: Sequence[int], out: str | Path, *,
                         stretch: Stretch = "percentile", dpi: int = DPI, overwrite: bool = False) -> list[Path]:
    """Draw each item with the dataset's ``plot`` into its PNG (see :func:`sample_figure_paths`); every target
    is checked before anything is drawn, so a refused one leaves nothing half done."""
    targets = sample_figure_paths(dataset, indices, out)
    if Path(out).suffix.lower() != ".png":
        check_output(out, overwrite=True, folder=True)  # a folder of pictures may grow; its files are checked below
    for target in targets.values():
        check_output(target, overwrite)
    return [save_figure(dataset.plot(dataset[i], stretch=stretch), target, dpi=dpi) for i, target in targets.items()]
