"""One self-contained ``report.html``: sortable tables, embedded figures, per-image results, config and environment.

The page needs nothing but itself: figures are ``data:`` URIs, the sorting script and the styles are
inline, and a Content-Security-Policy forbids the browser from fetching anything, so the file can be
mailed, archived or opened from a cluster's file system as is.
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from m3rcr.utils.files import atomic_path

#: (file name, caption) of the figures :func:`m3rcr.evaluation.evaluate.compare` writes, in reading order
COMPARE_FIGURES = (("fig_metrics_by_cloud_cover.png", "Metrics per cloud-cover level (Fig. 5)"),
                   ("fig_qualitative.png", "Qualitative results (Fig. 4)"),
                   ("fig_ndvi_by_cloud_cover.png", "NDVI per cloud-cover level (Fig. 9)"),
                   ("fig_ndvi_density.png", "Predicted vs reference NDVI (Fig. 8)"))
#: the tables compare writes (``stem.csv`` / ``stem.md``), in reading order
COMPARE_TABLES = ("table_per_class", "table_per_bin", "table_ndvi", "table_removal")
#: what the per-table Markdown files leave to tables.md's running text
TABLE_NOTES = {
    "table_per_class": "MAE on the [0, 1] scale x 100, SAM in degrees; per-class values pool all pixels of the "
                       "class over the whole set. Several seeds: mean ± sample standard deviation.",
    "table_ndvi": "RMSE between predicted and reference NDVI over all pixels; mIoU of the five NDVI levels "
                  "(< -0.1, -0.1-0.1, 0.1-0.4, 0.4-0.8, >= 0.8), in percent.",
    "table_removal": "On cloudy pixels only: MAE of the method and of filling every cloudy pixel with its image's "
                     "mean clear-sky reflectance, their ratio (below 1 beats the constant fill), relative band "
                     "bias, the grid-artefact ratio (far above 1: a grid texture) and the change of clear pixels.",
}
#: metrics.csv column -> (title, scale, decimals); other columns are shown as they are
PER_IMAGE_COLUMNS: dict[str, tuple[str, float | None, int]] = {
    "name": ("Image", None, 0), "cloud_cover": ("Cloud cover (%)", 100.0, 1),
    "cloud_cover_bin": ("Cloud-cover level (%)", None, 0), "mae": ("MAE (x100)", 100.0, 2),
    "psnr": ("PSNR (dB)", 1.0, 2), "ssim": ("SSIM", 1.0, 3), "sam": ("SAM (deg)", 1.0, 2),
    "mae_cloudy": ("MAE cloudy (x100)", 100.0, 2), "mae_clear": ("MAE clear (x100)", 100.0, 2),
    "ndvi_rmse": ("NDVI RMSE", 1.0, 4),
}
_MISSING = {"", "-", "–", "—", "n/a", "na", "nan", "none", "null"}
_LEADING_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_IMAGE_TYPES = {".png": ("image/png", b"\x89PNG\r\n\x1a\n"), ".jpg": ("image/jpeg", b"\xff\xd8\xff"),
                ".jpeg": ("image/jpeg", b"\xff\xd8\xff")}


class Cell(NamedTuple):
    """A table cell: the text shown and the number it sorts by (None: text or missing)."""

    text: str
    value: float | None = None


@dataclass
class Table:
    """A titled table; cells are strings (sorted by their leading number, if any), numbers, None or :class:`Cell`."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    description: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    """An image file to embed, with its caption."""

    path: Path
    caption: str


def number_in(text: str) -> float | None:
    """The number a formatted cell starts with ("12.3 ± 0.4" -> 12.3, "1,024" -> 1024); None if it starts with none."""
    t = text.strip()
    if t.lower() in _MISSING:
        return None
    if t.lower() in ("inf", "+inf", "infinity", "∞"):
        return math.inf
    if t.lower() in ("-inf", "-infinity", "-∞"):
        return -math.inf
    m = _LEADING_NUMBER.match(t)
    return float(m.group(0).replace(",", "")) if m else None


def format_number(v: float, decimals: int | None = None) -> str:
    """A number for a table: ``decimals`` places, or four significant digits without exponent where sensible."""
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if decimals is not None:
        return f"{v:.{decimals}f}"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _cell(x: Any) -> Cell:
    if isinstance(x, Cell):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return Cell("-")
    if isinstance(x, bool):
        return Cell(str(x))
    if isinstance(x, int | float):
        return Cell(format_number(float(x)), float(x))
    text = str(x)
    return Cell(text, number_in(text))


def _sort_value(v: float | None) -> str:
    if v is None:
        return ""
    return "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(float(v))


def _prepare_table(table: Table, ident: str) -> dict[str, Any]:
    rows = [[_cell(c) for c in row] for row in table.rows]
    for i, row in enumerate(rows):
        if len(row) != len(table.header):
            raise ValueError(f"table {table.title!r}: row {i + 1} has {len(row)} cells for {len(table.header)} columns")
    columns = []
    for j, title in enumerate(table.header):
        present = [r[j] for r in rows if r[j].text.strip().lower() not in _MISSING]
        numeric = all(c.value is not None for c in present)  # an empty column aligns like its numeric neighbours
        columns.append({"title": title, "numeric": numeric})
    cells = [[{"text": c.text, "key": _sort_value(c.value) if columns[j]["numeric"] else "",
               "missing": c.text.strip().lower() in _MISSING} for j, c in enumerate(r)] for r in rows]
    lines = table.title.strip().split("\n", 1)
    description = "\n".join(p for p in (lines[1].strip() if len(lines) > 1 else "", table.description) if p)
    return {"id": ident, "title": lines[0], "paragraphs": [p for p in description.split("\n\n") if p.strip()],
            "columns": columns, "rows": cells, "notes": list(table.notes)}


def _image_size(data: bytes, mime: str) -> tuple[int, int] | None:
    if mime == "image/png" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _prepare_figure(fig: Figure) -> dict[str, Any]:
    path = Path(fig.path)
    if path.suffix.lower() not in _IMAGE_TYPES:
        raise ValueError(f"{path}: figures must be PNG or JPEG files, not {path.suffix or 'files without a suffix'}")
    if not path.is_file():
        # a figure a step did not produce should not cost the rest of the report
        return {"caption": fig.caption, "missing": f"{path.name} was not found in {path.parent} (skipped)."}
    mime, magic = _IMAGE_TYPES[path.suffix.lower()]
    data = path.read_bytes()
    if not data.startswith(magic):
        raise ValueError(f"{path}: not a {mime.split('/')[1].upper()} file (unexpected first bytes)")
    size = _image_size(data, mime)
    return {"caption": fig.caption, "name": path.name, "src": f"data:{mime};base64,{base64.b64encode(data).decode()}",
            "width": size[0] if size else None, "height": size[1] if size else None, "missing": None}


class _Dumper(yaml.SafeDumper):
    """Block style, except short lists of scalars (a crop size, a seed list) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    short = all(not isinstance(v, dict | list) for v in data) and len(str(data)) <= 60
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=short)


_Dumper.add_representer(list, _represent_list)


def _as_text(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    plain = json.loads(json.dumps(obj, default=str))  # Paths, tuples, numpy scalars -> YAML-safe types
    return yaml.dump(plain, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100).rstrip()


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}-{n}", n + 1
    taken.add(ident)
    return ident


def render_html_report(title: str, tables: Sequence[Table], figures: Sequence[Figure | tuple[str | Path, str]],
                       per_image: Table | None = None, config: Mapping[str, Any] | None = None,
                       environment: Mapping[str, Any] | None = None, notes: Sequence[str] = ()) -> str:
    """The report page as a string (see :func:`write_html_report`)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("m3rcr.reports", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["code_spans"] = _code_spans
    taken = {"tables", "figures", "per-image", "config", "environment"}
    figs = [_prepare_figure(f if isinstance(f, Figure) else Figure(Path(f[0]), f[1])) for f in figures]
    return env.get_template("report.html.j2").render(
        title=title, notes=list(notes),
        generated=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        tables=[_prepare_table(t, _slug(t.title.split("\n", 1)[0], taken)) for t in tables],
        figures=figs, per_image=_prepare_table(per_image, "per-image-table") if per_image is not None else None,
        config=[(k, _as_text(v)) for k, v in (config or {}).items()],
        environment=[(k, _as_text(v)) for k, v in (environment or {}).items()])


def write_html_report(out_path: str | Path, title: str, tables: Sequence[Table],
                      figures: Sequence[Figure | tuple[str | Path, str]], per_image: Table | None = None,
                      config: Mapping[str, Any] | None = None, environment: Mapping[str, Any] | None = None,
                      notes: Sequence[str] = ()) -> Path:
    """Write one self-contained HTML page and return its path.

    ``tables`` (and ``per_image``) get click-to-sort columns; ``figures`` (PNG or JPEG files, in the given
    order) are embedded with their captions, a missing file is skipped with a note on the page; ``config``
    and ``environment`` map section titles to mappings (shown as YAML) or text; ``notes`` are paragraphs
    under the title (`backticks` become code). Everything is escaped. Written atomically.
    """
    out_path = Path(out_path)
    text = render_html_report(title, tables, figures, per_image, config, environment, notes)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out_path


def _code_spans(text: str) -> Any:
    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


# ---------------------------------------------------------------------------- inputs from output folders
def table_from_files(folder: str | Path, stem: str) -> Table | None:
    """A table written by :func:`m3rcr.reports.tables.write_table` (``stem.csv``, title from ``stem.md``);
    None if there is no CSV or it has no rows."""
    folder = Path(folder)
    path = folder / f"{stem}.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    if len(lines) < 2:
        return None
    md = folder / f"{stem}.md"
    title = stem
    if md.is_file():
        # the Markdown holds "# title\n\ndescription\n\n| table |": keep what precedes the table
        head = md.read_text(encoding="utf-8").split("\n|", 1)[0].strip()
        title = head.removeprefix("#").strip() or stem
    return Table(title, lines[0], lines[1:], description=TABLE_NOTES.get(stem, ""))


def per_image_table(groups: Mapping[str, Sequence[str | Path]]) -> Table:
    """Every evaluation folder's ``metrics.csv`` in one table with a Method column (and a Run column when a
    method has several folders, i.e. seeds); folders without one are listed in the table's notes."""
    columns: list[str] = []
    records: list[tuple[str, str, dict[str, str]]] = []
    notes = []
    several = any(len(g) > 1 for g in groups.values())
    for method, folders in groups.items():
        for folder in map(Path, folders):
            path = folder / "metrics.csv"
            if not path.is_file():
                notes.append(f"{method}: no per-image results in {folder} (no metrics.csv).")
                continue
            run = folder.name
            settings = folder / "metrics.json"
            if settings.is_file():
                seed = json.loads(settings.read_text()).get("seed")
                run = run if seed is None else f"seed {seed}"
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                columns += [c for c in reader.fieldnames or [] if c not in columns]
                records += [(method, run, row) for row in reader]
    header = ["Method", *(["Run"] if several else []), *(PER_IMAGE_COLUMNS.get(c, (c,))[0] for c in columns)]
    rows = []
    for method, run, row in records:
        cells: list[Any] = [method, *([run] if several else [])]
        for c in columns:
            raw = row.get(c)
            _, scale, decimals = PER_IMAGE_COLUMNS.get(c, (c, 1.0, None))
            v = number_in(raw) if raw is not None and scale is not None else None
            if raw is None or raw.strip().lower() in _MISSING:
                cells.append(None)
            elif v is None:
                cells.append(Cell(raw))
            else:
                v *= scale
                cells.append(Cell(format_number(v, None if math.isinf(v) else decimals), v))
        rows.append(cells)
    return Table("Per-image results", header, rows,
                 description="One row per image and evaluation, from each evaluation folder's metrics.csv.",
                 notes=notes)


def _settings(metrics: Mapping[str, Any]) -> dict[str, Any]:
    # metrics.json = settings + result sections (nested mappings); keep the settings
    return {k: v for k, v in metrics.items() if not isinstance(v, Mapping) and k not in ("runs",)}


def evaluation_provenance(groups: Mapping[str, Sequence[str | Path]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, environment) sections from evaluation folders: each run's evaluation settings, and the training
    run's ``config.yaml`` and latest ``environment.json`` entry when the checkpoint sits in a run folder
    (``RUN/checkpoints/*.ckpt``); an ``environment.json`` in the evaluation folder itself is shown too."""
    settings: dict[str, Any] = {}
    config: dict[str, Any] = {}
    environment: dict[str, Any] = {}
    for method, folders in groups.items():
        for folder in map(Path, folders):
            key = method if len(folders) == 1 else f"{method} ({folder.name})"
            path = folder / "metrics.json"
            if not path.is_file():
                continue
            data = json.loads(path.read_text())
            settings[key] = {"folder": str(folder), **_settings(data)}
            places = [folder]
            if data.get("checkpoint"):
                places.append(Path(data["checkpoint"]).parent.parent)
            for place in places:
                if (place / "config.yaml").is_file() and place != folder:
                    config[f"Training configuration: {key} ({place / 'config.yaml'})"] = \
                        (place / "config.yaml").read_text(encoding="utf-8").rstrip()
                env_file = place / "environment.json"
                if env_file.is_file():
                    what = "Evaluation" if place == folder else "Training"
                    try:
                        history = json.loads(env_file.read_text())
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        # provenance is a courtesy: a damaged record costs its entry, not the report
                        environment[f"{what}: {key} ({env_file})"] = {"unreadable": f"not valid JSON ({exc})"}
                        continue
                    latest = history[-1] if isinstance(history, list) and history else history
                    environment[f"{what}: {key} ({env_file})"] = latest
    return {"Evaluation settings (metrics.json)": settings, **config}, environment


def compare_figures(folder: str | Path) -> list[Figure]:
    """The figures of a compare folder in reading order; the conditional ones (qualitative: saved predictions,
    NDVI density: NDVI histograms) only when written."""
    folder = Path(folder)
    optional = {"fig_qualitative.png", "fig_ndvi_density.png"}
    return [Figure(folder / name, caption) for name, caption in COMPARE_FIGURES
            if name not in optional or (folder / name).is_file()]


def write_compare_html(out: str | Path, groups: Mapping[str, Sequence[str | Path]],
                       title: str = "Comparison of evaluations") -> Path:
    """``out/report.html`` for :func:`m3rcr.evaluation.evaluate.compare`: its tables and figures in ``out``,
    the per-image rows, settings and provenance of the evaluation folders ``groups`` (method -> folders)."""
    from m3rcr.utils.provenance import environment

    out = Path(out)
    tables = [t for t in (table_from_files(out, s) for s in COMPARE_TABLES) if t is not None]
    config, env = evaluation_provenance(groups)
    runs = ", ".join(f"{m} ({len(f)} runs)" if len(f) > 1 else m for m, f in groups.items())
    return write_html_report(out / "report.html", title, tables, compare_figures(out), per_image_table(groups),
                             config, {"This report": environment(), **env}, notes=[f"Methods: {runs}."])
