"""The wire protocol between the host and a process worker (pure framing, no pickling).

A message is a 16-byte header followed by ``nparts`` parts::

    header: b"HFW1" | kind: uint32 LE | nparts: uint32 LE | reserved: uint32 LE (always 0)
    part:   length: uint64 LE | <length> bytes           (repeated nparts times)

Host -> child: ``RUN`` (1) with parts ``[task_id (u64 LE), func_key (utf-8), func_bytes
(empty when already sent to this child), call_bytes, dep_0, dep_1, ...]``; ``SHUTDOWN`` (2),
no parts.

Child -> host: ``READY`` (3) once at start, parts ``[pid as ASCII]``; ``RESULT`` (1), parts
``[task_id, result pickle, seconds the child spent on the task (f64 LE), kept]``; ``ERROR`` (2),
parts ``[task_id, exception pickle or b"", "module.QualName", str(exc), traceback text, kept]``;
``kept``: the indices (ASCII, space-separated) of the task's arrays copied into scratch segments
that the child still refers to after the task, which the host then copies no other array into.
A kernel of an offload launch may also send
``SEND`` (4), ``RECEIVE`` (5) and ``BARRIER`` (8) while it runs, answered with ``VALUE`` (6) or
``FAILED`` (7), or, for a request polled (its last parts ``poll``, or ``poll`` or ``wait`` and the
generation of a barrier reached polling), ``NOT_YET`` (9) with that generation.

>>> r, w = os.pipe()
>>> write_message(w, RUN, [u64(7), b"mod.f#1", b"", b"..."])
>>> read_message(r)
(1, [bytearray(b'\\x07\\x00\\x00\\x00\\x00\\x00\\x00\\x00'), bytearray(b'mod.f#1'), bytearray(b''), bytearray(b'...')])

The child is started as ``python -m hetflow._worker READ_FD WRITE_FD``; the host may set
``HETFLOW_WORKER_ID`` (its index), ``HETFLOW_WORKER_START`` (1 for the worker's first process, 2 for
the one that replaces it...) and ``HETFLOW_SYS_PATH`` (see :func:`worker_environment`).

Both functions take a raw file descriptor (``int``, read/written with ``os.readv``/``os.writev``
loops that handle short transfers; EINTR is retried by Python) or a binary file object
(``readinto``/``write``).
"""
from __future__ import annotations

import os
import struct
import sys
from typing import Any, BinaryIO, List, Optional, Sequence, Tuple, Union

MAGIC = b"HFW1"
HEADER = struct.Struct("<4sIII")  # magic, kind, nparts, reserved
LENGTH = struct.Struct("<Q")
HEADER_SIZE = HEADER.size  # 16

# Message kinds. The extension has the same table (python/src/protocol.hpp, exported as
# _hetflow.message_kinds(); the protocol tests check that they agree): workers read this one,
# without the extension.
# Host -> child.
RUN = 1
SHUTDOWN = 2
# Child -> host.
RESULT = 1
ERROR = 2
READY = 3
# An offload kernel's requests to its host while it runs (child -> host), and the host's answers.
SEND = 4
RECEIVE = 5
VALUE = 6
FAILED = 7
BARRIER = 8
NOT_YET = 9  # a polled RECEIVE or BARRIER that would wait (a barrier's generation in its part)
MESSAGE_KINDS = {
    "RUN": RUN,
    "SHUTDOWN": SHUTDOWN,
    "RESULT": RESULT,
    "ERROR": ERROR,
    "READY": READY,
    "SEND": SEND,
    "RECEIVE": RECEIVE,
    "VALUE": VALUE,
    "FAILED": FAILED,
    "BARRIER": BARRIER,
    "NOT_YET": NOT_YET,
}

# Index of each part of a RUN message; deps start at RUN_DEPS. RUN_ARRAYS is the array table:
# one "segment-id fd host-pid offset nbytes" line per array the call's ArrayRefs stand for.
RUN_TASK_ID, RUN_FUNC_KEY, RUN_FUNC_BYTES, RUN_CALL_BYTES, RUN_ARRAYS, RUN_DEPS = 0, 1, 2, 3, 4, 5
# Index of each part of an ERROR message.
ERROR_TASK_ID, ERROR_EXC_BYTES, ERROR_TYPE_NAME, ERROR_MESSAGE, ERROR_TRACEBACK = 0, 1, 2, 3, 4

# The C++ reader rejects more parts than this; so do both Python ends.
MAX_PARTS = 1 << 16

# Environment variables the host sets for a worker.
WORKER_ID_VARIABLE = "HETFLOW_WORKER_ID"  # the worker's index
WORKER_START_VARIABLE = "HETFLOW_WORKER_START"  # 1 for the worker's first process, 2 for the next...
NUM_CORES_VARIABLE = "HETFLOW_NUM_CORES"  # the host's number of worker processes
SYS_PATH_VARIABLE = "HETFLOW_SYS_PATH"  # the host's sys.path, os.pathsep-separated; put first in the worker's
# The host's multiprocessing authkey as hex: a worker that shares it can use the host's
# multiprocessing.Manager() proxies handed to its tasks.
AUTHKEY_VARIABLE = "HETFLOW_AUTHKEY"
INITIALIZER_VARIABLE = "HETFLOW_INITIALIZER"  # hetflow.init's (initializer, initargs), pickled, as hex

Channel = Union[int, BinaryIO]
BytesLike = Union[bytes, bytearray, memoryview]

_CHUNK = 1 << 26  # read large parts into a buffer grown this much at a time


class ProtocolError(Exception):
    """The byte stream is not a well-formed message (garbled, or cut off mid-message)."""


def swallow_sigint(signum: int, frame: Any) -> None:
    """SIGINT's handler in a worker process (here, so that a task may pickle it): the host
    handles Ctrl-C, and the worker's task goes on."""


def u64(value: int) -> bytes:
    """``value`` as 8 little-endian bytes (the task id part): ``u64(1) == b"\\x01" + 7 * b"\\0"``."""
    return LENGTH.pack(value)


def from_u64(data: BytesLike) -> int:
    """The inverse of :func:`u64`; raises ProtocolError unless ``data`` is 8 bytes long."""
    if len(data) != 8:
        raise ProtocolError(f"hetflow protocol: expected an 8-byte integer, got {len(data)} bytes")
    return LENGTH.unpack(data)[0]


def worker_environment() -> List[str]:
    """``NAME=value`` entries for the host to add to its workers' environment, so that they
    import modules (those functions are pickled by reference from) the way the host does.

    >>> worker_environment()
    ['HETFLOW_SYS_PATH=/home/me/project:/usr/lib/python311.zip:...', 'HETFLOW_AUTHKEY=5f0c...']
    """
    paths: List[str] = []
    for entry in sys.path:
        try:
            path = os.path.abspath(entry) if entry else os.getcwd()
        except OSError:  # a relative entry, or "" (``-c``, stdin), in a working directory since deleted
            continue
        if path not in paths:
            paths.append(path)
    from multiprocessing.process import current_process

    entries = [f"{SYS_PATH_VARIABLE}={os.pathsep.join(paths)}", f"{AUTHKEY_VARIABLE}={current_process().authkey.hex()}"]
    if os.environ.get("PYTHONINSPECT"):
        # Empty is unset to Python: a worker ending with PYTHONINSPECT printed its SystemExit's
        # traceback and went on to an interactive prompt, as the host's program asked for itself.
        entries.append("PYTHONINSPECT=")
    return entries


# -- writing ------------------------------------------------------------------------------------
def encode_message(kind: int, parts: Sequence[BytesLike] = ()) -> bytes:
    """The whole message as one ``bytes`` (handy for tests and small messages).

    >>> encode_message(SHUTDOWN)
    b'HFW1\\x02\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    """
    return b"".join(bytes(piece) for piece in _pieces(kind, parts))


def write_message(channel: Channel, kind: int, parts: Sequence[BytesLike] = ()) -> None:
    """Writes one message to a file descriptor or binary file object, all of it.

    Raises OSError (BrokenPipeError when the reader is gone) on a failed write.

    >>> write_message(fd, RESULT, [u64(task_id), pickle.dumps(value, protocol=5)])
    """
    pieces = _pieces(kind, parts)
    if isinstance(channel, int):
        _write_fd(channel, pieces)
    else:
        for piece in pieces:
            _write_file(channel, piece)
        channel.flush()


def _pieces(kind: int, parts: Sequence[BytesLike]) -> List[memoryview]:
    if not 0 <= kind < 1 << 32:
        raise ValueError(f"hetflow protocol: message kind {kind} does not fit in a uint32")
    if len(parts) > MAX_PARTS:
        raise ValueError(f"hetflow protocol: {len(parts)} parts, more than the limit of {MAX_PARTS}")
    pieces = [memoryview(HEADER.pack(MAGIC, kind, len(parts), 0))]
    for part in parts:
        if isinstance(part, str):
            raise TypeError("hetflow protocol: message parts must be bytes-like, not str (encode it)")
        view = memoryview(part).cast("B")  # raw bytes, whatever the item format
        pieces.append(memoryview(LENGTH.pack(view.nbytes)))
        if view.nbytes:
            pieces.append(view)
    return pieces


def _write_fd(fd: int, pieces: List[memoryview]) -> None:
    if not hasattr(os, "writev"):  # pragma: no cover - non-POSIX
        for piece in pieces:
            while piece.nbytes:
                piece = piece[os.write(fd, piece) :]
        return
    first = 0
    while first < len(pieces):
        written = os.writev(fd, pieces[first : first + 1024])  # IOV_MAX is 1024 on Linux
        while first < len(pieces) and written >= pieces[first].nbytes:
            written -= pieces[first].nbytes
            first += 1
        if written:
            pieces[first] = pieces[first][written:]


def _write_file(file: BinaryIO, piece: memoryview) -> None:
    while piece.nbytes:
        written = file.write(piece)
        if written is None:  # non-blocking raw file with a full buffer
            raise BlockingIOError("hetflow protocol: non-blocking files are not supported")
        piece = piece[written:]


# -- reading ------------------------------------------------------------------------------------
def read_message(channel: Channel) -> Optional[Tuple[int, List[bytearray]]]:
    """Reads one message: ``(kind, parts)``, or ``None`` on end of file before its first byte.

    Parts come back as ``bytearray`` (read in place, no extra copy; ``==`` with bytes works).
    Raises ProtocolError when the stream ends mid-message or is not a message at all.

    >>> message = read_message(fd)
    >>> if message is None: ...           # the other end closed the pipe
    >>> kind, parts = message
    """
    header = _read_exact(channel, HEADER_SIZE, "the header", at_boundary=True)
    if header is None:
        return None
    magic, kind, nparts, reserved = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"hetflow protocol: garbled message: bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if reserved != 0:
        raise ProtocolError(f"hetflow protocol: garbled message: reserved header field is {reserved}, not 0")
    if nparts > MAX_PARTS:
        raise ProtocolError(f"hetflow protocol: garbled message: {nparts} parts, more than the limit of {MAX_PARTS}")
    parts: List[bytearray] = []
    for index in range(nparts):
        length = LENGTH.unpack(_read_exact(channel, 8, f"the length of part {index}"))[0]
        parts.append(_read_exact(channel, length, f"part {index} ({length} bytes)"))
    return kind, parts


def _read_exact(channel: Channel, size: int, what: str, at_boundary: bool = False) -> Any:
    """``size`` bytes as a bytearray; None on EOF before any byte if ``at_boundary``."""
    buffer = bytearray(min(size, _CHUNK))
    got = 0
    while got < size:
        if got == len(buffer):  # grow large parts step by step: a garbled length fails at EOF
            buffer += bytes(min(size - got, _CHUNK))
        with memoryview(buffer) as view:
            count = _read_into(channel, view[got:])
        if count == 0:
            if got == 0 and at_boundary:
                return None
            raise ProtocolError(
                f"hetflow protocol: truncated message: end of file after {got} of {size} bytes of {what}"
            )
        got += count
    return buffer


def _read_into(channel: Channel, view: memoryview) -> int:
    if isinstance(channel, int):
        if hasattr(os, "readv"):
            return os.readv(channel, [view])
        data = os.read(channel, len(view))  # pragma: no cover - non-POSIX
        view[: len(data)] = data  # pragma: no cover
        return len(data)  # pragma: no cover
    count = channel.readinto(view)  # type: ignore[attr-defined]
    if count is None:
        raise BlockingIOError("hetflow protocol: non-blocking files are not supported")
    return count
