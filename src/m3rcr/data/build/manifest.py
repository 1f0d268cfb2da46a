"""Scene sets: the schema of a scene-manifest entry (also the command-line flags of one set), and reading them.

:data:`SCENE_KEYS` is the one description of the keys: :func:`scene_set_from_mapping` checks entries
against it and the command line can generate its ``--<key>`` flags from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from m3rcr.data.preprocess import OPTICAL_BANDS
from m3rcr.errors import DataError

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
#: UDM2 class bands (1-based) that ``cloud_classes`` may name; band 1 is "clear", band 7 the confidence.
UDM2_CLASSES: dict[str, int] = {"snow": 2, "shadow": 3, "light_haze": 4, "heavy_haze": 5, "cloud": 6}

_SEASON_RE = re.compile(r"^[A-Za-z0-9]+$")  # the official file-name pattern (layout._NAME_RE)
_AOI_RE = re.compile(r"^[A-Za-z0-9-]+$")


@dataclass(frozen=True)
class SceneKey:
    """One key of a scene set: a manifest entry's key, and the command-line flag :attr:`flag`.

    ``kind`` says how a value is written: ``path`` (a file), ``name`` (season or AOI), ``int`` (a positive
    number), ``bands`` (band numbers such as ``2,3,4,8``), ``names`` (several words), ``choice`` (one of
    ``choices``).
    """

    name: str
    kind: Literal["path", "name", "int", "bands", "names", "choice"]
    help: str
    required: bool = False  #: every scene set needs it (besides one of :data:`MASK_KEYS`)
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        """The command-line flag: ``--cloudmask-band`` for ``cloudmask_band``."""
        return "--" + self.name.replace("_", "-")


#: Every key of a scene set, in the order of the command line's flags.
SCENE_KEYS: tuple[SceneKey, ...] = (
    SceneKey("cloudy", "path", "cloudy optical scene; its grid is the optical grid", required=True, metavar="TIF"),
    SceneKey("cloudfree", "path", "cloud-free optical scene", required=True, metavar="TIF"),
    SceneKey("sar", "path", "Sentinel-1 VV/VH, any CRS and resolution", required=True, metavar="TIF"),
    SceneKey("landcover", "path", "ESA WorldCover map (uint8 codes, 0 = no data)", required=True, metavar="TIF"),
    SceneKey("cloudmask", "path", "cloud mask raster (non-zero = cloudy)", metavar="TIF"),
    SceneKey("cloudmask_band", "int", "band of --cloudmask (default: 1)", metavar="N"),
    SceneKey("udm", "path", "Planet UDM (1 band) or UDM2 (8 bands) instead of --cloudmask", metavar="TIF"),
    SceneKey("udm_format", "choice", "default: from the band count", choices=("udm", "udm2")),
    SceneKey("cloud_classes", "names", "UDM2 classes counted as cloudy: cloud, heavy_haze, light_haze, shadow, snow "
                                       "(default: cloud)", metavar="NAME"),
    SceneKey("season", "name", "season name in file names (letters and digits)", required=True),
    SceneKey("aoi", "name", "AOI name in file names (letters, digits and -)", required=True),
    SceneKey("bands", "bands", "1-based bands of blue, green, red, NIR (default: 1,2,3,4 for 4-band scenes)",
             metavar="B,G,R,NIR"),
    SceneKey("cloudfree_bands", "bands", "the same for --cloudfree (default: --bands)", metavar="B,G,R,NIR"),
    SceneKey("sar_bands", "bands", "SAR bands (default: 1,2)", metavar="VV,VH"),
    SceneKey("sar_units", "choice", "SAR in dB or linear power (default: db)", choices=("db", "linear")),
    SceneKey("split", "choice", "put the scene set in this split", choices=SPLITS),
)
#: A scene set gives exactly one of these: a cloud-mask raster or a Planet UDM.
MASK_KEYS = ("cloudmask", "udm")
_ORDERED = sorted(SCENE_KEYS, key=lambda k: k.kind != "name")  # manifest messages name season and aoi first
_ALL_KEYS = tuple(k.name for k in _ORDERED)
_REQUIRED_KEYS = tuple(k.name for k in _ORDERED if k.required)


@dataclass(frozen=True)
class SceneSet:
    """The rasters of one area and how to read them; paths may be relative to the working folder.

    Exactly one of ``cloudmask`` (a raster, non-zero = cloudy) and ``udm`` (Planet UDM or UDM2) is given.
    """

    season: str
    aoi: str
    cloudy: Path
    cloudfree: Path
    sar: Path
    landcover: Path
    cloudmask: Path | None = None
    cloudmask_band: int = 1
    udm: Path | None = None
    udm_format: Literal["udm", "udm2"] | None = None  #: None: from the band count (1: udm, 8: udm2)
    cloud_classes: tuple[str, ...] = ("cloud",)  #: UDM2 classes counted as cloudy
    bands: tuple[int, ...] | None = None  #: 1-based blue, green, red, NIR; None: 1..4 of a 4-band scene
    cloudfree_bands: tuple[int, ...] | None = None  #: the same for the cloud-free scene; None: ``bands``
    sar_bands: tuple[int, int] = (1, 2)  #: VV, VH
    sar_units: Literal["db", "linear"] = "db"
    split: Split | None = None  #: None: assigned by AOI (see :func:`~m3rcr.data.build.assign_splits`)
    source: str = ""  #: where the set was described ("scenes.yaml entry 2"), for error messages

    def __post_init__(self) -> None:
        where = self.source or "scene set"
        for name, value, pattern in (("season", self.season, _SEASON_RE), ("aoi", self.aoi, _AOI_RE)):
            if not isinstance(value, str) or not pattern.match(value):
                allowed = "letters and digits" + (" and '-'" if name == "aoi" else "")
                raise DataError(where, f"{name} {value!r} must be {allowed} (it becomes part of file names)")
        self._check_mask(where)
        if self.sar_units not in ("db", "linear"):
            raise DataError(where, f"sar_units must be db or linear, got {self.sar_units!r}")
        if self.split not in (None, *SPLITS):
            raise DataError(where, f"split must be train or test, got {self.split!r}")
        if len(self.sar_bands) != 2 or len(set(self.sar_bands)) != 2:
            raise DataError(where, "sar_bands must be two different band numbers (VV, VH), got "
                                   f"{list(self.sar_bands)}")
        for name, value in (("bands", self.bands), ("cloudfree_bands", self.cloudfree_bands)):
            if value is not None and len(value) != len(OPTICAL_BANDS):
                raise DataError(where, f"{name} needs {len(OPTICAL_BANDS)} band numbers "
                                       f"({', '.join(OPTICAL_BANDS)}), got {len(value)}")

    def _check_mask(self, where: str) -> None:
        if (self.cloudmask is None) == (self.udm is None):
            raise DataError(where, "give exactly one of cloudmask (a raster, non-zero = cloudy) and udm "
                                   "(Planet UDM or UDM2)")
        if self.udm is None and (self.udm_format is not None or tuple(self.cloud_classes) != ("cloud",)):
            raise DataError(where, "udm_format and cloud_classes apply to a udm only")
        if self.cloudmask is None and self.cloudmask_band != 1:
            raise DataError(where, "cloudmask_band applies to a cloudmask raster only")
        if self.udm_format not in (None, "udm", "udm2"):
            raise DataError(where, f"udm_format must be udm or udm2, got {self.udm_format!r}")
        bad = [c for c in self.cloud_classes if c not in UDM2_CLASSES]
        if bad or not self.cloud_classes:
            raise DataError(where, f"cloud_classes must name some of {', '.join(UDM2_CLASSES)}; got "
                                   f"{list(self.cloud_classes)}")

    @property
    def key(self) -> str:
        """``<season>_<aoi>``: the folder suffix of this set's tiles; sets sharing it continue numbering."""
        return f"{self.season}_{self.aoi}"

    @property
    def mask_path(self) -> Path:
        """The cloud mask raster or the UDM."""
        return self.cloudmask if self.cloudmask is not None else self.udm  # type: ignore[return-value]

    def paths(self) -> dict[str, Path]:
        """Every input raster by role."""
        out = {"cloudy": self.cloudy, "cloudfree": self.cloudfree, "sar": self.sar,
               "landcover": self.landcover}
        out["cloudmask" if self.cloudmask is not None else "udm"] = self.mask_path
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (for ``build.json``)."""
        out: dict[str, Any] = {"season": self.season, "aoi": self.aoi, "source": self.source}
        out.update({k: str(v.absolute()) for k, v in self.paths().items()})
        if self.cloudmask is not None:
            out["cloudmask_band"] = self.cloudmask_band
        else:
            out.update(udm_format=self.udm_format, cloud_classes=list(self.cloud_classes))
        out.update(bands=list(self.bands) if self.bands else None,
                   cloudfree_bands=list(self.cloudfree_bands) if self.cloudfree_bands else None,
                   sar_bands=list(self.sar_bands), sar_units=self.sar_units, split=self.split)
        return out


def _int_list(value: Any, where: str, key: str) -> tuple[int, ...]:
    """Band numbers from ``"2,3,4,8"``, ``[2, 3, 4, 8]`` or a single number."""
    items = value.replace(" ", "").split(",") if isinstance(value, str) else value
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise DataError(where, f"{key}: expected band numbers such as [2, 3, 4, 8], got {value!r}")
    out = []
    for item in items:
        try:
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise ValueError
            number = int(item)
        except (TypeError, ValueError):
            raise DataError(where, f"{key}: {item!r} is not a band number") from None
        if number < 1:
            raise DataError(where, f"{key}: band numbers start at 1, got {number}")
        out.append(number)
    return tuple(out)


def _check_keys(entry: Any, where: str) -> None:
    if not isinstance(entry, Mapping):
        raise DataError(where, f"must be a mapping of keys ({', '.join(_REQUIRED_KEYS)}, ...), "
                               f"got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in _ALL_KEYS)
    if unknown:
        raise DataError(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_ALL_KEYS)}")
    missing = [k for k in _REQUIRED_KEYS if entry.get(k) in (None, "")]
    if missing:
        raise DataError(where, f"missing key(s) {', '.join(missing)}")


def scene_set_from_mapping(entry: Any, base: str | Path, where: str) -> SceneSet:
    """A :class:`SceneSet` from one manifest entry (or the command-line flags), paths relative to ``base``.

    Raises a :class:`DataError` naming ``where`` for unknown or missing keys and bad values.
    """
    _check_keys(entry, where)
    base = Path(base)

    def path(key: str) -> Path | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, Path)) or not str(value):
            raise DataError(where, f"{key} must be a file path, got {value!r}")
        return base / Path(value).expanduser()

    def name(key: str) -> str:
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DataError(where, f"{key} must be letters and digits, got {value!r}")
        return str(value)

    def bands(key: str) -> tuple[int, ...] | None:
        return _int_list(entry[key], where, key) if entry.get(key) is not None else None

    classes = entry.get("cloud_classes", ("cloud",))
    classes = (classes,) if isinstance(classes, str) else classes
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise DataError(where, f"cloud_classes must be a list of names, got {classes!r}")
    band = entry.get("cloudmask_band", 1)
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise DataError(where, f"cloudmask_band must be a band number (1, 2, ...), got {band!r}")
    sar_bands = _int_list(entry.get("sar_bands", (1, 2)), where, "sar_bands")
    return SceneSet(
        season=name("season"), aoi=name("aoi"),
        cloudy=path("cloudy"), cloudfree=path("cloudfree"),  # type: ignore[arg-type]
        sar=path("sar"), landcover=path("landcover"),  # type: ignore[arg-type]
        cloudmask=path("cloudmask"), cloudmask_band=band, udm=path("udm"), udm_format=entry.get("udm_format"),
        cloud_classes=tuple(classes), bands=bands("bands"), cloudfree_bands=bands("cloudfree_bands"),
        sar_bands=sar_bands,  # type: ignore[arg-type]
        sar_units=str(entry.get("sar_units", "db")).lower(),  # type: ignore[arg-type]
        split=entry.get("split"), source=where,
    )


def load_manifest(path: str | Path) -> list[SceneSet]:
    """Read a YAML scene manifest: ``scenes:`` followed by a list of scene sets (or just the list).

    Paths in it are relative to the manifest's folder.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "scene manifest not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML ({exc})".replace("\n", " ")) from None
    if isinstance(doc, Mapping):
        extra = sorted(str(k) for k in doc if k != "scenes")
        if extra:
            raise DataError(path, f"unknown top-level key(s) {', '.join(extra)}; expected only 'scenes'")
        doc = doc.get("scenes")
    if not isinstance(doc, list) or not doc:
        raise DataError(path, "expected a list of scene sets under 'scenes:' (season, aoi, cloudy, "
                              "cloudfree, sar, landcover, cloudmask or udm)")
    return [scene_set_from_mapping(e, path.parent, f"{path} entry {i}") for i, e in enumerate(doc, start=1)]


def scene_sets_from_flags(manifest: str | Path | None, given: Mapping[str, Any]) -> list[SceneSet]:
    """The scene sets of a manifest file, or the one scene set whose keys are ``given`` (the command line's
    flags, unset ones left out): both at once, or a scene set without its required keys, is an error."""
    flag = {k.name: k.flag for k in SCENE_KEYS}
    if manifest is not None:
        if given:
            flags = ", ".join(flag[k.name] for k in SCENE_KEYS if k.name in given)
            raise ValueError(f"give either --scenes or the flags of one scene set, not both (also given: {flags})")
        return load_manifest(manifest)
    required = [k.flag for k in SCENE_KEYS if k.required]
    either = " or ".join(f"--{k}" for k in MASK_KEYS)
    missing = [k.flag for k in SCENE_KEYS if k.required and k.name not in given]
    if not any(k in given for k in MASK_KEYS):
        missing.append(either)
    if missing:
        raise ValueError(f"give --scenes FILE, or one scene set with {', '.join(required)} and {either}; "
                         f"missing: {', '.join(missing)}")
    return [scene_set_from_mapping(dict(given), ".", "command line")]
