"""Progress of many tasks: a tqdm bar when tqdm is importable, else a plain line on stderr."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional, TextIO

# Not a terminal (a log file, CI): a line at most this often, and one at the end.
LOG_INTERVAL_S = 5.0
# A terminal: the line is redrawn in place at most this often.
TTY_INTERVAL_S = 0.1


class Progress:
    """Counts finished tasks out of ``total``; ``update`` may be called from any thread."""

    def __init__(self, total: int, stream: Optional[TextIO] = None) -> None:
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self._closed = False
        self._bar = _tqdm_bar(total)
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._bar is None and _is_terminal(self._stream)
        self._shown_at = -float("inf")
        self._shown: Optional[tuple] = None
        if self._bar is None and self._tty:
            self._show(time.monotonic())

    def update(self, count: int = 1, total: Optional[int] = None) -> None:
        """Adds ``count`` finished tasks; ``total`` replaces the total (work that grows)."""
        with self._lock:
            if self._closed:
                return
            self.done += count
            if total is not None and total != self.total:
                self.total = total
                if self._bar is not None:
                    self._bar.total = total
                    self._bar.refresh()
            if self._bar is not None:
                if count:
                    self._bar.update(count)
                return
            now = time.monotonic()
            if now - self._shown_at >= (TTY_INTERVAL_S if self._tty else LOG_INTERVAL_S):
                self._show(now)

    def close(self, complete: bool = False) -> None:
        """Shows the final count (once) and ends the line or bar. complete: every task is known
        to be done, though not every update may have arrived yet."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if complete and self.done < self.total:
                if self._bar is not None:
                    self._bar.update(self.total - self.done)
                self.done = self.total
            if self._bar is not None:
                self._bar.close()
                return
            if self._shown != (self.done, self.total):
                self._show(time.monotonic())
            if self._tty:
                self._stream.write("\n")
                self._stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _show(self, now: float) -> None:
        self._shown_at = now
        self._shown = (self.done, self.total)
        text = f"hetflow: {self.done}/{self.total} tasks done"
        self._stream.write(f"\r{text}" if self._tty else f"{text}\n")
        self._stream.flush()


def _tqdm_bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="task", desc="hetflow")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
