"""The server as a process: the model it holds, its signals, and its socket file.

Kept apart from the protocol handlers in :mod:`server`: what a resident process needs to
load (and reload) its model, wait, and leave cleanly.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from frameqc.runtime.engine.pipeline import Classifier
from frameqc.runtime.errors import UsageError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.session import Model
from frameqc.runtime.serving.protocol import file_identity, peer_uid


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and the file it came from; a request keeps one to its end."""

    model: Model
    identity: dict | None
    classifier: Classifier

    @property
    def card(self) -> ModelCard:
        return self.model.card


def load_served(path: str | os.PathLike, threads: int | None = None) -> ServedModel:
    """Load the model at ``path``, its file's identity taken first.

    The identity is taken before loading, and the file it names (the link resolved) is
    what is loaded: a file replaced while loading shows as a change at the next look,
    never as the model already loaded.
    """
    identity = file_identity(path)
    model = Model(identity["path"] if identity else path, threads)
    model.warm_up()
    return ServedModel(model, identity, Classifier(model))


def claim_socket(path: Path) -> None:
    """Make way for a new socket: remove a stale one, refuse a live one or a non-socket.

    A socket another user's process listens on (someone bound the path first) is named
    as such; a stale one that cannot be removed is a one-line error, not a traceback.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        owner = peer_uid(probe)
    except OSError:
        try:
            path.unlink()  # nobody listens: left over from a server that died
        except OSError as exc:
            raise UsageError(f"{path} is a stale socket of uid {st.st_uid} that cannot be "
                             f"removed ({exc.strerror}); give --socket another path") from None
        return
    finally:
        probe.close()
    if owner != os.getuid():
        raise UsageError(f"{path} is held by another user's process (uid {owner}); not "
                         "serving there: give --socket another path")
    raise UsageError(f"a server is already listening on {path}")


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise UsageError(f"--tcp wants HOST:PORT or PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Signals:
    """SIGTERM, SIGINT and SIGHUP as bytes on a pipe the main thread waits on.

    Python runs a signal's handler in the main thread only, and only once that thread runs
    again; a main thread blocked in a lock (``Event.wait()``) while the kernel delivered
    the signal to another thread never did, and the signal was lost. The C-level handler
    writes the signal's number to the wake-up pipe whichever thread it interrupted, so
    the wait below always wakes.
    """

    WATCHED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __enter__(self) -> Signals:
        self.stop = False
        self.read_end, write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        os.set_blocking(write_end, False)
        self.write_end = write_end
        self.old_fd = signal.set_wakeup_fd(write_end)
        self.old = {sig: signal.signal(sig, self._handle) for sig in self.WATCHED}
        return self

    def _handle(self, signum, frame) -> None:
        """Nothing to do here: the signal's number on the pipe is what counts."""

    def wait(self, timeout: float) -> set[int]:
        """The signals that came within ``timeout`` seconds; ``stop`` set by SIGTERM/SIGINT."""
        ready, _, _ = select.select([self.read_end], [], [], timeout)
        came: set[int] = set()
        with contextlib.suppress(BlockingIOError):
            while ready and (data := os.read(self.read_end, 64)):
                came.update(data)
        self.stop = self.stop or bool(came & {signal.SIGTERM, signal.SIGINT})
        return came

    def __exit__(self, *exc) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self.old_fd)
        os.close(self.read_end)
        os.close(self.write_end)


def inode(path: Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        return st.st_dev, st.st_ino
    return None


def remove_if_ours(path: Path, ours: tuple[int, int] | None) -> None:
    """Remove the socket file only if it is still the one we bound: a newer server may
    own the path now (ours removed by hand, theirs bound there)."""
    if ours is not None and inode(path) == ours:
        path.unlink(missing_ok=True)
