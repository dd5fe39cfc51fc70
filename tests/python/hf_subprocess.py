"""Helpers for the tests that run hetflow in a child interpreter (exit, Ctrl-C, __main__, stdout,
``python -m asyncio``). Not a test module.

Every child gets an environment without the caller's HETFLOW_* settings, its own session (a
stray Ctrl-C at the terminal does not reach it) and, in scripts, SIGINT set back to Python's
default handler (a shell may have started pytest with SIGINT ignored, which a child inherits).
A watchdog kills a child that hangs, so a hang fails the test instead of stalling the run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# Far longer than any of these children needs (about a second); reaching it means a hang.
HANG_S = 10.0

PRELUDE = """\
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)


def hf_children():
    # (pid, start time) of this process's live children: its worker processes.
    import os
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            if int(fields[1]) == os.getpid():
                found.append((int(entry), int(fields[19])))
    return found


"""


def child_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    # The child imports the hetflow the tests import (installed, or this checkout's python/).
    import hetflow

    package_parent = str(Path(hetflow.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def write_script(directory: Path, code: str, name: str = "script.py") -> Path:
    path = directory / name
    path.write_text(PRELUDE + textwrap.dedent(code))
    return path


# -- processes, read from /proc -------------------------------------------------------------------
Ident = Tuple[int, int]  # (pid, start time in clock ticks): a process, told apart from a later one


def _stat_fields(pid: int) -> Optional[List[str]]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def children_of(pid: int) -> List[Ident]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append((int(entry), int(fields[19])))
    return found


def state_of(ident: Ident) -> Optional[str]:
    """None if that process is gone, else its state letter (``Z``: a zombie nobody reaped)."""
    fields = _stat_fields(ident[0])
    if fields is None or int(fields[19]) != ident[1]:
        return None
    return fields[0]


def leftovers(idents: Sequence[Ident]) -> Dict[int, str]:
    """The processes among ``idents`` that still exist (zombies included), pid -> state."""
    out = {}
    for ident in idents:
        state = state_of(ident)
        if state is not None:
            out[ident[0]] = state
    return out


class Child:
    """A child interpreter: ``with Child(tmp_path, [script]) as child: ...``.

    ``child.workers`` may be filled with the idents of its worker processes; they and the
    child are killed (by pid) on exit from the block if still running.
    """

    def __init__(self, cwd: Path, args: Sequence[str], stdin_text: Optional[str] = None) -> None:
        self.workers: List[Ident] = []
        self.hung = False
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=str(cwd),
            env=child_env(),
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._stdin_text = stdin_text
        self._watchdog = threading.Timer(HANG_S, self._on_hang)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _on_hang(self) -> None:
        self.hung = True
        self._kill()

    def _kill(self) -> None:
        for ident in list(self.workers) + children_of(self.proc.pid):
            if state_of(ident) not in (None, "Z"):
                try:
                    os.kill(ident[0], signal.SIGKILL)
                except OSError:
                    pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchdog.cancel()
        self._kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            if stream is not None:
                stream.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline_until(self, marker: str) -> List[str]:
        """stdout lines up to and including the first that starts with ``marker``."""
        lines: List[str] = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(
                    f"the child {'hung' if self.hung else 'ended'} before printing {marker!r}; "
                    f"stdout: {lines}; stderr: {self.proc.stderr.read()}"
                )
            lines.append(line.rstrip("\n"))
            if line.startswith(marker):
                return lines

    def finish(self) -> Tuple[int, str, str]:
        """Waits for the child to end: (exit status, rest of stdout, stderr); fails on a hang."""
        out, err = self.proc.communicate(self._stdin_text)
        self._stdin_text = None
        assert not self.hung, f"the child hung (killed after {HANG_S} s); stdout: {out!r}; stderr: {err!r}"
        return self.proc.returncode, out, err


def run_script(directory: Path, code: str) -> Tuple[int, str, str]:
    """Runs ``code`` as a script file in a child; (exit status, stdout, stderr)."""
    script = write_script(directory, code)
    with Child(directory, [str(script)]) as child:
        return child.finish()
