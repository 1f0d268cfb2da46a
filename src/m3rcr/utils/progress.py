"""Progress reporting that suits where the output goes.

On a terminal a tqdm bar is best; in a log file (a batch job, ``nohup``, ``| tee``) its carriage-return
redraws pile up into one huge line. :func:`progress` gives a bar on a terminal and otherwise a
:class:`PlainProgress` that writes an ordinary line now and then ("evaluate aligncr: 120/780 batch, 35 s").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Self

#: seconds between two plain progress lines
DEFAULT_INTERVAL = 30.0


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``, where progress goes) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 07 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class PlainProgress:
    """A progress report for output that is not a terminal: one line at most every ``interval`` seconds,
    and a last line on :meth:`close` if any line was written (a short job says nothing).

    Supports the part of tqdm's interface this package uses: iteration, ``update``, ``close``, ``n``,
    ``total`` and use as a context manager.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float = DEFAULT_INTERVAL, file: IO[str] | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.file = file
        self.n = 0
        self.start = self._last = time.monotonic()
        self.lines = 0
        self.closed = False

    def _write(self, text: str) -> None:
        out = self.file if self.file is not None else sys.stderr
        print(text, file=out, flush=True)
        self.lines += 1

    def _line(self, final: bool = False) -> str:
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        elapsed = format_duration(time.monotonic() - self.start)
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{done} {self.unit}{' done in' if final else ','} {elapsed}"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; write a line if ``interval`` seconds have passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write(self._line())

    def close(self) -> None:
        """Finish: a last line if the job was long enough to report on before."""
        if not self.closed and self.lines:
            self._write(self._line(final=True))
        self.closed = True

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("PlainProgress was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, interval: float | None = None) -> Any:
    """A tqdm bar on a terminal, :class:`PlainProgress` lines otherwise, nothing if not ``enabled``.

    Use it like ``tqdm``: wrap an iterable, or give ``total`` and call ``update``/``close``. ``interval``:
    seconds between plain lines (default :data:`DEFAULT_INTERVAL`).
    """
    from tqdm import tqdm

    if not enabled or is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit,
                         interval=DEFAULT_INTERVAL if interval is None else interval)
