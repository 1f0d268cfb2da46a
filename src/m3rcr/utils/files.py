"""Safe file output: nothing half-written is ever left under the final name.

The one rule every command follows for its outputs (README, "Outputs"):

* an output that exists is refused unless ``overwrite`` (``--overwrite``) is given (:func:`check_output`);
* missing parent folders are created;
* files and folders are written under a temporary name and renamed when complete
  (:func:`atomic_path`, :func:`atomic_dir`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """An output exists and replacing it was not asked for.

    The message names the Python argument; the command line names its flag instead (``cli_message``).
    """

    def __init__(self, path: str | Path, problem: str = "exists") -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem} (pass overwrite=True to replace it)")

    def cli_message(self) -> str:
        """The message for a command-line user."""
        return f"{self.path}: {self.problem} (pass --overwrite to replace it)"


def check_output(path: str | Path, overwrite: bool, *, folder: bool = False) -> Path:
    """Refuse ``path`` if it exists and ``overwrite`` is false; refuse a file where a folder goes and vice versa.

    An empty folder counts as absent. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise OutputExistsError(path, "exists and is not empty")
    else:
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a folder; give a file name")
        if path.exists() and not overwrite:
            raise OutputExistsError(path)
    return path


def refuse_replacing(out: Path, inputs: Iterable[str | Path | None], owned: Callable[[Path], bool], kind: str) -> None:
    """Before ``out`` (a folder) is replaced: refuse if it is or holds one of ``inputs``, or if it exists, is not
    empty and is not ``owned`` (a folder of the kind the command writes, described by ``kind``).

    ``--overwrite`` replaces a command's own earlier output, never a dataset, a run or someone's files.
    """
    if not out.is_dir() or not any(out.iterdir()):
        return
    resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        p = Path(item).resolve()
        if p == resolved or resolved in p.parents:
            raise ValueError(f"{out}: holds the input {item}; replacing it would delete the input (choose another "
                             "output folder)")
    if not owned(out):
        raise FileExistsError(f"{out}: is not an earlier {kind} output; --overwrite only replaces those (choose "
                              "another output folder)")


# mkstemp creates files readable by the owner only; finished outputs get the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)


def make_parents(path: Path) -> None:
    """Create the missing parent folders of ``path``; a file in the way is an error naming it."""
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"{parent}: is a file, so it cannot hold {path}")
    path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    The temporary name keeps the suffix so that writers choosing a format from it (GDAL, matplotlib)
    still work.
    """
    path = Path(path)
    make_parents(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``path``; it replaces ``path`` only if the block succeeds.

    On failure the folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    make_parents(path)
    tmp = path.parent / f".{path.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a killed run
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
