"""Download SEN12MS-CR: the 12 archives of the TUM data server, resumable, verified, extracted safely.

One archive per season and modality (``ROIs1158_spring_s1.tar.gz`` ...; spec section 2). Each is fetched into
``ROOT/.partial/<archive>`` (an interrupted transfer resumes there with an HTTP ``Range`` request; a dropped
connection is retried with backoff), checked against the size the server announced, then read in full (every tar
member and the gzip stream to its checksum) while it is extracted into a staging folder under ``ROOT/.partial``.
Only an archive that read through without error is moved into ``ROOT`` in the official layout
(``ROOT/ROIs1158_spring_s1/s1_<roi>/...``); a truncated or corrupt one is an error naming it and nothing of it
appears in ``ROOT``. ``ROOT/download_manifest.json`` records per archive its size and SHA-256 as downloaded, the
URL, the time and what was extracted, so that a rerun skips it and ``verify`` can check it later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from m3rcr.errors import DataError, DataWarning
from m3rcr.utils.files import atomic_path
from m3rcr.utils.progress import PlainProgress, format_duration, is_terminal
from m3rcr.version import __version__

#: the server the reference download script uses
DEFAULT_BASE_URL = "https://dataserv.ub.tum.de/s/m1554803"
#: season name -> the ROI set's prefix in archive and folder names
SEASONS: dict[str, str] = {"spring": "ROIs1158_spring", "summer": "ROIs1868_summer", "fall": "ROIs1970_fall",
                           "winter": "ROIs2017_winter"}
MODALITIES: tuple[str, ...] = ("s1", "s2", "s2_cloudy")
MANIFEST_NAME = "download_manifest.json"
PARTIAL_DIR = ".partial"
#: where --keep-archives keeps the archives (not a ROI set folder, so the official layout is unaffected)
ARCHIVE_DIR = "archives"

#: The reference download script's size table, in its own unit: 512-byte SECTORS (spec section 2). The values are
#: all multiples of 8 sectors, i.e. disk usage rounded up to 4 KiB blocks, not exact byte counts: they size the
#: disk-space check, while the exact size comes from the server (Content-Length / Content-Range).
ARCHIVE_SIZE_SECTORS: dict[str, dict[str, int]] = {
    "ROIs1158_spring": {"s1": 15_026_120, "s2": 48_568_904, "s2_cloudy": 48_569_368},
    "ROIs1868_summer": {"s1": 17_456_784, "s2": 56_425_520, "s2_cloudy": 56_426_004},
    "ROIs1970_fall": {"s1": 21_127_832, "s2": 68_291_864, "s2_cloudy": 68_292_448},
    "ROIs2017_winter": {"s1": 9_460_956, "s2": 30_580_552, "s2_cloudy": 30_580_812},
}
SECTOR_BYTES = 512
#: extracted size / archive size: users report about 270 GB on disk after extracting the 241 GB of archives
EXTRACTED_RATIO = 270 / 241
#: a server's size that differs from the table by more than this fraction is worth a warning
TABLE_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Archive:
    """One archive of the release: ``ROIs1158_spring_s1.tar.gz`` holds the folder ``ROIs1158_spring_s1/``."""

    season: str
    modality: str

    @property
    def folder(self) -> str:
        """The top-level folder the archive extracts to."""
        return f"{SEASONS[self.season]}_{self.modality}"

    @property
    def name(self) -> str:
        """The archive's file name."""
        return f"{self.folder}.tar.gz"

    @property
    def table_bytes(self) -> int:
        """Its size by the reference size table, in bytes (approximate: see :data:`ARCHIVE_SIZE_SECTORS`)."""
        return ARCHIVE_SIZE_SECTORS[SEASONS[self.season]][self.modality] * SECTOR_BYTES

    def url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        """Its download URL on ``base_url`` (the reference script's pattern)."""
        return f"{base_url.rstrip('/')}/download?path=/&files={self.name}"


def select_archives(seasons: Iterable[str] = tuple(SEASONS), modalities: Iterable[str] = MODALITIES) -> list[Archive]:
    """The archives of the given seasons and modalities, in the release's order; an unknown name is a ValueError."""
    seasons, modalities = list(seasons), list(modalities)
    for given, known, what in ((seasons, SEASONS, "season"), (modalities, MODALITIES, "modality")):
        unknown = [x for x in given if x not in known]
        if unknown:
            raise ValueError(f"unknown {what} {', '.join(unknown)} (choose from {', '.join(known)})")
    return [Archive(s, m) for s in SEASONS if s in seasons for m in MODALITIES if m in modalities]


@dataclasses.dataclass(frozen=True)
class DownloadOptions:
    """How :func:`download_sen12mscr` works.

    ``retries``: attempts after a dropped connection or a server error, waiting ``backoff`` x 2^k seconds (the
    count starts again once bytes arrive); ``keep_archives``: keep each archive in ``ROOT/archives`` instead of
    deleting it after extraction; ``verify``: re-check the archives already downloaded (their extracted files,
    and the size and SHA-256 of kept archives) before downloading the rest; ``log``: receives one line per step.
    """

    seasons: tuple[str, ...] = tuple(SEASONS)
    modalities: tuple[str, ...] = MODALITIES
    base_url: str = DEFAULT_BASE_URL
    keep_archives: bool = False
    verify: bool = False
    progress: bool = True
    retries: int = 5
    backoff: float = 2.0
    timeout: float = 60.0
    chunk_size: int = 1 << 20
    log: Callable[[str], None] | None = None

    def say(self, line: str) -> None:
        """Pass ``line`` to ``log`` if there is one."""
        if self.log is not None:
            self.log(line)


@dataclasses.dataclass
class DownloadResult:
    """What a run did: archive names downloaded and extracted, skipped as done before, verified."""

    root: Path
    downloaded: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    verified: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """One line for the command line."""
        text = f"{self.root}: downloaded {len(self.downloaded)}, already there {len(self.skipped)}"
        return text + (f", verified {len(self.verified)}" if self.verified else "")


def download_sen12mscr(root: str | Path, options: DownloadOptions = DownloadOptions()) -> DownloadResult:
    """Download, verify and extract the selected SEN12MS-CR archives into ``root`` (official layout).

    Archives whose manifest entry and extracted folder are both present are skipped. Free disk space is checked
    before anything is downloaded. Raises :class:`~m3rcr.errors.DataError` naming the archive (or ``root``) on a
    failed download, a truncated, corrupt or unsafe archive, or too little disk space.
    """
    root = Path(root)
    archives = select_archives(options.seasons, options.modalities)
    manifest = read_manifest(root)
    result = DownloadResult(root)
    todo = []
    for archive in archives:
        if archive.name in manifest["archives"] and (root / archive.folder).is_dir():
            result.skipped.append(archive.name)
        elif (root / archive.folder).exists():
            raise DataError(root / archive.folder, f"exists but {MANIFEST_NAME} has no entry for {archive.name} "
                                                   "(extracted by hand?); move it away to download it again")
        else:
            todo.append(archive)
    if options.verify:
        verify_download(root, [a for a in archives if a.name in result.skipped])
        result.verified = list(result.skipped)
    check_disk_space(root, todo, options.keep_archives)
    try:
        for archive in todo:
            entry = _download_one(root, archive, options)
            manifest["archives"][archive.name] = entry
            _write_manifest(root, manifest)
            result.downloaded.append(archive.name)
    finally:
        partial = root / PARTIAL_DIR
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()
    return result


# ---------------------------------------------------------------------------------------------------- disk space

def space_needed(root: Path, archives: Iterable[Archive], keep_archives: bool) -> tuple[int, int]:
    """Bytes still to download and bytes needed on disk for ``archives``.

    On disk: every extracted folder, plus the archives themselves if they are kept, else the largest one (archives
    are deleted one by one after extraction). Bytes already in ``ROOT/.partial`` count as downloaded.
    """
    remaining = []
    extracted = 0
    for archive in archives:
        part = root / PARTIAL_DIR / archive.name
        have = part.stat().st_size if part.is_file() else 0
        remaining.append(max(0, archive.table_bytes - have))
        extracted += round(archive.table_bytes * EXTRACTED_RATIO)
    download = sum(remaining)
    return download, extracted + (download if keep_archives else max(remaining, default=0))


def check_disk_space(root: Path, archives: list[Archive], keep_archives: bool) -> None:
    """Refuse (DataError naming ``root``) if its file system has less free space than ``archives`` need."""
    if not archives:
        return
    download, needed = space_needed(root, archives, keep_archives)
    existing = next(p for p in [root, *root.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise DataError(root, f"not enough free disk space: {len(archives)} archive(s) need about "
                              f"{_size(needed)} ({_size(download)} still to download, extracted size estimated "
                              f"from the published sizes), but only {_size(free)} is free")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------------------------- manifest

def read_manifest(root: str | Path) -> dict[str, Any]:
    """``ROOT/download_manifest.json``, or an empty one if there is none; a malformed one is a DataError."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return {"dataset": "sen12mscr", "archives": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot be read ({exc}); remove it to start again") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("archives"), dict):
        raise DataError(path, "has no 'archives' table; remove it to start again")
    return manifest


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(root / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def verify_download(root: str | Path, archives: Iterable[Archive]) -> None:
    """Re-check downloaded ``archives`` against the manifest: the number and total size of the extracted files,
    and the size and SHA-256 of a kept archive. All problems are reported in one DataError naming the manifest."""
    root = Path(root)
    entries = read_manifest(root)["archives"]
    problems = []
    for archive in archives:
        entry = entries.get(archive.name)
        if entry is None:
            problems.append(f"{archive.name}: not in the manifest")
            continue
        files, size = _folder_stats(root / archive.folder)
        if (files, size) != (entry.get("files"), entry.get("extracted_bytes")):
            problems.append(f"{archive.folder}: {files} files, {size} bytes, but {entry.get('files')} files, "
                            f"{entry.get('extracted_bytes')} bytes were extracted")
        if entry.get("archive"):
            kept = root / entry["archive"]
            if not kept.is_file():
                problems.append(f"{kept}: kept archive is missing")
            elif (kept.stat().st_size, _sha256(kept)) != (entry["size"], entry["sha256"]):
                problems.append(f"{kept}: size or SHA-256 differs from the download")
    if problems:
        raise DataError(root / MANIFEST_NAME, "verification failed: " + "; ".join(problems)
                        + " (remove a damaged folder and run again to download it anew)")


def _folder_stats(folder: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- one archive

def _download_one(root: Path, archive: Archive, options: DownloadOptions) -> dict[str, Any]:
    """Fetch, verify and extract one archive; its manifest entry."""
    url = archive.url(options.base_url)
    part = root / PARTIAL_DIR / archive.name
    part.parent.mkdir(parents=True, exist_ok=True)
    options.say(f"downloading {archive.name} from {url}")
    size, sha256, total = fetch(url, part, options)
    if total is None and abs(size - archive.table_bytes) > TABLE_TOLERANCE * archive.table_bytes:
        warnings.warn(f"{archive.name}: the server gave no size and the {size} bytes received differ from the "
                      f"published size (about {archive.table_bytes} bytes); the full read of the archive decides",
                      DataWarning, stacklevel=2)
    options.say(f"verifying and extracting {archive.name}")
    try:
        files, extracted = extract_archive(part, root, archive.folder)
    except DataError:
        part.unlink(missing_ok=True)  # a corrupt archive cannot be resumed: the next run starts it again
        raise
    kept = None
    if options.keep_archives:
        kept = Path(ARCHIVE_DIR) / archive.name
        (root / kept).parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, root / kept)
    else:
        part.unlink()
    return {"url": url, "size": size, "sha256": sha256, "files": files, "extracted_bytes": extracted,
            "archive": kept.as_posix() if kept else None,
            "downloaded": datetime.now(UTC).isoformat(timespec="seconds")}


class _Dropped(Exception):
    """The transfer stopped early or the server had a passing problem: worth another attempt."""


class _Transfer:
    """A file being downloaded: the bytes written so far and their running SHA-256."""

    def __init__(self, path: Path, chunk_size: int) -> None:
        self.path, self.chunk_size = path, chunk_size
        self.digest = hashlib.sha256()
        self.size = 0
        if path.is_file():  # an earlier run's bytes: hash them so the digest covers the whole archive
            with open(path, "rb") as f:
                while block := f.read(chunk_size):
                    self.digest.update(block)
                    self.size += len(block)

    def restart(self) -> None:
        """Start from byte 0 (the server ignored the Range request, or answered another range)."""
        self.digest, self.size = hashlib.sha256(), 0
        self.path.write_bytes(b"")

    def copy(self, response: BinaryIO, bar: _ByteBar) -> None:
        """Append the response's body; a connection error surfaces as :class:`_Dropped`."""
        with open(self.path, "r+b" if self.path.exists() else "wb") as f:
            f.truncate(self.size)  # a block half-written when the last attempt died is not hashed: drop it
            f.seek(self.size)
            try:
                while block := response.read(self.chunk_size):
                    f.write(block)
                    self.digest.update(block)
                    self.size += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as exc:
                raise _Dropped(f"connection lost after {self.size} bytes ({exc})") from exc


def fetch(url: str, path: Path, options: DownloadOptions) -> tuple[int, str, int | None]:
    """Download ``url`` into ``path``, resuming from the bytes already there; (size, SHA-256, server's size or None).

    Retries a dropped connection ``options.retries`` times with exponential backoff; on failure the bytes stay in
    ``path`` for the next run and the DataError says so.
    """
    transfer = _Transfer(path, options.chunk_size)
    bar = _ByteBar(path.name, options.progress)
    attempts = 0
    try:
        while True:
            before = transfer.size
            try:
                total = _fetch_once(url, transfer, bar, options.timeout)
                return transfer.size, transfer.digest.hexdigest(), total
            except _Dropped as exc:
                attempts = 0 if transfer.size > before else attempts + 1  # progress earns fresh attempts
                if attempts > options.retries:
                    kept = f"{transfer.size} bytes kept in {path}, run again to resume" if transfer.size else \
                        "nothing received"
                    if not transfer.size:
                        path.unlink(missing_ok=True)
                    raise DataError(url, f"download failed: {exc}; {kept}") from None
                wait = options.backoff * 2 ** max(0, attempts - 1)
                options.say(f"{path.name}: {exc}; retrying in {wait:.0f} s")
                time.sleep(wait)
    finally:
        bar.close()


def _fetch_once(url: str, transfer: _Transfer, bar: _ByteBar, timeout: float) -> int | None:
    """One request from ``transfer.size`` on; the total size if the server gave it."""
    headers = {"User-Agent": f"m3rcr/{__version__}"}
    if transfer.size:
        headers["Range"] = f"bytes={transfer.size}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and transfer.size:  # nothing left after our offset: complete, if the sizes agree
            total = _content_range(exc.headers.get("Content-Range"))[1]
            if total in (None, transfer.size):
                return total
            transfer.restart()
            raise _Dropped(f"server has {total} bytes, we have more; starting again") from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Dropped(f"HTTP {exc.code} {exc.reason}") from None
        raise DataError(url, f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        raise _Dropped(str(getattr(exc, "reason", exc))) from None
    with response:
        total = _start_of_body(response, transfer)
        bar.start(total, transfer.size)
        transfer.copy(response, bar)
    if total is not None and transfer.size != total:
        if transfer.size > total:
            transfer.restart()
            raise _Dropped(f"received more than the {total} bytes announced; starting again")
        raise _Dropped(f"connection closed after {transfer.size} of {total} bytes")
    return total


def _start_of_body(response: http.client.HTTPResponse, transfer: _Transfer) -> int | None:
    """Line ``transfer`` up with the response (206 continues, 200 restarts); the total size if known."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != transfer.size:
            transfer.restart()
            raise _Dropped(f"server answered bytes from {start}, not {transfer.size}; starting again")
        return total if total is not None else (start + int(length) if length else None)
    if transfer.size:  # 200 to a Range request: the server sends the whole file
        transfer.restart()
    return int(length) if length and length.isdigit() else None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200); ``*`` totals are None."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    first = span.split("-")[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


# ---------------------------------------------------------------------------------------------------- extraction

def extract_archive(archive: Path, root: Path, folder: str) -> tuple[int, int]:
    """Read ``archive`` in full and extract it into ``root``; (regular files, their bytes).

    Every member must lie in ``folder/`` with a relative name without ``..``; tarfile's ``data`` filter refuses
    links leaving the destination and special files. Extraction goes to a staging folder under ``ROOT/.partial``
    and ``root/folder`` appears only once the whole archive, gzip checksum included, has been read without error.
    """
    staging = root / PARTIAL_DIR / f"{folder}.extract"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir(parents=True)
    try:
        files, size = _extract_all(archive, staging, folder)
        if not (staging / folder).is_dir():
            raise DataError(archive, f"holds no folder {folder}/")
        os.replace(staging / folder, root / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files, size


def _extract_all(archive: Path, staging: Path, folder: str) -> tuple[int, int]:
    files = size = 0
    try:
        with gzip.open(archive, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:  # a stream: one pass over the archive
                for member in tar:
                    _check_member(archive, member.name, folder)
                    tar.extract(member, staging, filter="data")
                    if member.isreg():
                        files, size = files + 1, size + member.size
            while gz.read(1 << 20):  # the rest of the gzip stream, so that its CRC and length are checked
                pass
    except tarfile.FilterError as exc:
        raise DataError(archive, f"unsafe member refused: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(archive, f"truncated or corrupt archive ({exc or type(exc).__name__}); not extracted") \
            from None
    return files, size


def _check_member(archive: Path, name: str, folder: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(archive, f"unsafe member refused: {name} (absolute or with '..')")
    parts = [p for p in path.parts if p != "."]
    if parts and parts[0] != folder:
        raise DataError(archive, f"member {name} lies outside {folder}/ (not the official layout)")


# ---------------------------------------------------------------------------------------------------- progress

class _PlainBytes(PlainProgress):
    """Plain progress lines for a download: amount, rate and time left."""

    def __init__(self, desc: str, total: int | None, initial: int) -> None:
        super().__init__(total=total, desc=desc, unit="B")
        self.n = self.initial = initial

    def _line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        done = f"{_size(self.n)}/{_size(self.total)}" if self.total else _size(self.n)
        if final:
            return f"{self.desc}: {done} done in {format_duration(elapsed)}"
        left = (f", {format_duration((self.total - self.n) / rate)} left" if self.total and rate > 0 else "")
        return f"{self.desc}: {done}, {_size(rate)}/s{left}"


class _ByteBar:
    """A byte progress bar opened at the first response: tqdm (rate, ETA) on a terminal, plain lines otherwise."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled = desc, enabled
        self.bar: Any = None

    def start(self, total: int | None, initial: int) -> None:
        """Show ``initial`` of ``total`` bytes done (again after a restart)."""
        if not self.enabled:
            return
        if self.bar is not None and self.bar.n == initial and self.bar.total == total:
            return
        self.close()
        if is_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=self.desc, unit="B", unit_scale=True,
                            unit_divisor=1024, dynamic_ncols=True)
        else:
            self.bar = _PlainBytes(self.desc, total, initial)

    def update(self, n: int) -> None:
        """Count ``n`` more bytes."""
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        """Finish the bar, if one is open."""
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.close()
            self.bar = None
