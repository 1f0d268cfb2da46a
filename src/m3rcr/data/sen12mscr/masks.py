"""Cloud masks of SEN12MS-CR's cloudy Sentinel-2 patches, computed with s2cloudless and cached on disk.

SEN12MS-CR ships no cloud masks; methods and per-cloud-cover analyses compute them on the cloudy image with
s2cloudless as UnCRtainTS does (:data:`MASK_SETTINGS`, on the 13 bands clipped to [0, 10000] and divided by
10000). One 256 x 256 mask takes about half a second, so masks are cached: one ``<cache_dir>/<name>.npz``
per patch holding the uint8 mask and a fingerprint (sha256 of the cloudy array's bytes, shape and dtype,
the settings and the s2cloudless version). An entry whose fingerprint does not match, or that cannot be
read, is recomputed with a warning, never used.

s2cloudless is an optional dependency (``pip install "m3rcr[s2cloudless]"``): it is imported only when a
mask has to be computed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from m3rcr.errors import DataError, DataWarning
from m3rcr.utils.files import atomic_path

#: s2cloudless settings of UnCRtainTS (read at each call, so a changed value changes the fingerprint).
MASK_SETTINGS: dict[str, Any] = {"threshold": 0.4, "all_bands": True, "average_over": 4, "dilation_size": 2}
INSTALL_HINT = 'pip install "m3rcr[s2cloudless]"'
#: Version of the cache entry format; bump it when the entry's content changes meaning.
CACHE_FORMAT = "1"
N_BANDS = 13
DN_MAX = 10000.0

# LightGBM's OpenMP thread pool does not survive fork: a multi-threaded prediction in a forked DataLoader
# worker of a process that already predicted hangs forever (measured with s2cloudless 1.7.3). Processes
# forked from the one that imported this module therefore predict with one thread (their parallelism
# comes from the workers anyway); spawned workers import the module afresh and use the default.
_MAIN_PID = os.getpid()


class S2CloudlessUnavailable(DataError, ImportError):
    """s2cloudless, needed to compute a cloud mask, cannot be imported.

    A :class:`~m3rcr.errors.DataError` (so the command line reports it as a user-facing problem) and an
    :class:`ImportError` (so ``except ImportError`` catches it).
    """


def _problem_unavailable(exc: BaseException) -> str:
    return (f"cloud masks of SEN12MS-CR need s2cloudless, which cannot be imported ({exc}); install it with "
            f"{INSTALL_HINT}")


def _settings_key() -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(MASK_SETTINGS.items()))


@functools.lru_cache(maxsize=4)
def _detector(settings: tuple[tuple[str, Any], ...]) -> Any:
    """The s2cloudless detector of ``settings``, built once per process (its LightGBM model loads lazily)."""
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(**dict(settings))


def _get_detector(where: str | Path | None) -> Any:
    try:
        return _detector(_settings_key())
    except ImportError as exc:
        raise S2CloudlessUnavailable(where or "", _problem_unavailable(exc)) from exc


@functools.lru_cache(maxsize=1)
def _installed_version() -> str:
    from importlib.metadata import version

    return version("s2cloudless")


def _s2cloudless_version(where: str | Path | None) -> str:
    """The installed s2cloudless version, read from its metadata (cheap: no LightGBM or OpenCV import)."""
    from importlib.metadata import PackageNotFoundError

    try:
        return _installed_version()
    except PackageNotFoundError as exc:
        raise S2CloudlessUnavailable(where or "", _problem_unavailable(exc)) from exc


def _predict_kwargs() -> dict[str, int]:
    """Keyword arguments of LightGBM's predict: one thread in processes forked from the importing one."""
    return {} if os.getpid() == _MAIN_PID else {"num_threads": 1}


def _check_shape(cloudy_dn: np.ndarray, where: str | Path | None) -> None:
    if cloudy_dn.ndim != 3 or cloudy_dn.shape[0] != N_BANDS:
        raise DataError(where or "", f"a cloud mask needs the {N_BANDS} Sentinel-2 L1C bands as ({N_BANDS}, H, W); "
                                     f"got an array of shape {cloudy_dn.shape}")


def cloud_probability_and_mask(cloudy_dn: np.ndarray, *,
                               where: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cloud probability and mask (both float32 (H, W); mask in {0, 1}, 1 = cloudy) of a cloudy S2 patch.

    ``cloudy_dn`` is (13, H, W) raw L1C DN (uint16 or float): NaN becomes 0, values are clipped to
    [0, 10000] and divided by 10000 (in float32, as UnCRtainTS's loader does), then s2cloudless runs with
    :data:`MASK_SETTINGS`. A blank image (mean and standard deviation below 1e-5 DN, UnCRtainTS's test) gets
    an all-cloudy mask and probability 1, with a :class:`~m3rcr.errors.DataWarning` naming ``where`` (the
    file, for messages only).
    """
    _check_shape(cloudy_dn, where)
    dn = np.nan_to_num(np.asarray(cloudy_dn, dtype=np.float32), nan=0.0)
    dn = np.clip(dn, 0.0, DN_MAX)
    if dn.mean() < 1e-5 and dn.std() < 1e-5:
        warnings.warn(f"{where or 'cloudy image'}: blank (all zero) image: its cloud mask is set to all cloudy",
                      DataWarning, stacklevel=2)
        ones = np.ones(dn.shape[1:], dtype=np.float32)
        return ones, ones.copy()
    detector = _get_detector(where)
    bands_last = np.moveaxis(dn / np.float32(DN_MAX), 0, -1)[None]
    prob = detector.get_cloud_probability_maps(bands_last, **_predict_kwargs())
    mask = detector.get_mask_from_prob(prob)
    return prob[0].astype(np.float32), mask[0].astype(np.float32)


def _user_cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG spec says a relative value is to be ignored
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"


def _writable(folder: Path) -> bool:
    """Whether ``folder`` can be created (or written, if it exists): its first existing ancestor is writable."""
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def default_cache_dir(root: str | Path) -> Path:
    """Where the cloud masks of the dataset at ``root`` are cached.

    ``ROOT/.m3rcr_cache/s2cloudless`` if that can be written; otherwise (a dataset on a read-only disk) a
    per-user folder ``($XDG_CACHE_HOME or ~/.cache)/m3rcr/s2cloudless/<first 16 hex digits of the sha256 of
    the resolved root path>``. Nothing is created.
    """
    resolved = Path(root).expanduser().resolve()
    in_root = resolved / ".m3rcr_cache" / "s2cloudless"
    if resolved.is_dir() and _writable(in_root):
        return in_root
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
    return _user_cache_home() / "m3rcr" / "s2cloudless" / digest


def _image_sha256(cloudy_dn: np.ndarray) -> str:
    digest = hashlib.sha256(f"{cloudy_dn.shape}|{cloudy_dn.dtype.str}|".encode())
    digest.update(np.ascontiguousarray(cloudy_dn).data)
    return digest.hexdigest()


def _fingerprint(cloudy_dn: np.ndarray, where: str | Path) -> dict[str, str]:
    """What a cache entry must have been made from to be used (all plain strings: no pickle needed)."""
    return {"format": CACHE_FORMAT, "image_sha256": _image_sha256(cloudy_dn),
            "settings": json.dumps(dict(_settings_key()), sort_keys=True),
            "s2cloudless_version": _s2cloudless_version(where)}


_FIELD_WORDS = {"format": "cache format", "image_sha256": "image", "settings": "s2cloudless settings",
                "s2cloudless_version": "s2cloudless version"}
# what np.load of a damaged, truncated, foreign or unreadable .npz raises
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _check_name(name: str) -> None:
    # the name becomes a file name in the cache folder: it must not lead out of it
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ValueError(f"{name!r}: not a patch name usable as a cache file name (e.g. ROIs1970_fall_139_p839)")


class CloudMasker:
    """Cloud masks of SEN12MS-CR patches, read from a cache folder when it holds a matching entry.

    ``cache_dir`` None computes every mask. An unwritable cache folder gets one warning, then masks are
    computed without being stored. ``hits`` and ``misses`` (masks computed) count the calls. Safe to use in
    DataLoader worker processes: entries are written atomically, so concurrent writers never leave a half
    entry.
    """

    def __init__(self, cache_dir: str | Path | None) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.hits = 0
        self.misses = 0
        self._can_write = True

    def __repr__(self) -> str:
        return f"CloudMasker(cache_dir={str(self.cache_dir)!r}, hits={self.hits}, misses={self.misses})"

    def __call__(self, cloudy_dn: np.ndarray, name: str, source: str | Path) -> np.ndarray:
        """Float32 (H, W) cloud mask (1 = cloudy) of the patch ``name`` (e.g. ``ROIs1970_fall_139_p839``).

        Read from the cache when it holds an entry made from the same pixels with the same settings and
        s2cloudless version, else computed (:func:`cloud_probability_and_mask`) and written. ``source`` is
        the cloudy file's path, used in messages only.
        """
        _check_name(name)
        _check_shape(cloudy_dn, source)
        if self.cache_dir is None:
            self.misses += 1
            return cloud_probability_and_mask(cloudy_dn, where=source)[1]
        path = self.cache_dir / f"{name}.npz"
        fingerprint = _fingerprint(cloudy_dn, source)
        mask = self._read(path, fingerprint, cloudy_dn.shape[1:], name, source)
        if mask is not None:
            self.hits += 1
            return mask
        self.misses += 1
        mask = cloud_probability_and_mask(cloudy_dn, where=source)[1]
        if self._can_write:
            self._write(path, mask, fingerprint)
        return mask

    @staticmethod
    def _read(path: Path, fingerprint: dict[str, str], shape: tuple[int, ...], name: str,
              source: str | Path) -> np.ndarray | None:
        """The cached mask if ``path`` holds a valid entry matching ``fingerprint``; None (warned) otherwise."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                stored = {key: str(entry[key][()]) for key in fingerprint}
                mask = np.asarray(entry["mask"])
        except _READ_ERRORS as exc:
            warnings.warn(f"{path}: the cached cloud mask of {name} cannot be read ({type(exc).__name__}: "
                          f"{exc}); recomputed from {source}", DataWarning, stacklevel=3)
            return None
        differ = [_FIELD_WORDS[key] for key in fingerprint if stored[key] != fingerprint[key]]
        if not differ and (mask.shape != tuple(shape) or mask.dtype != np.uint8 or mask.max(initial=0) > 1):
            differ = [f"mask shape or values (stored: {mask.shape}, {mask.dtype})"]
        if differ:
            warnings.warn(f"{path}: the cached cloud mask of {name} did not match its image ({source}): "
                          f"different {', '.join(differ)}; recomputed", DataWarning, stacklevel=3)
            return None
        return mask.astype(np.float32)

    def _write(self, path: Path, mask: np.ndarray, fingerprint: dict[str, str]) -> None:
        arrays = {key: np.array(value, dtype=np.str_) for key, value in fingerprint.items()}
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, mask=mask.astype(np.uint8), **arrays)
        except OSError as exc:
            self._can_write = False
            warnings.warn(f"{self.cache_dir}: cloud masks cannot be cached there ({exc}); continuing without "
                          "caching (masks are recomputed each time)", DataWarning, stacklevel=3)
