"""Alert hooks: run the operator's command when a decision is an alert, off the decision path.

``--on-alert CMD`` is split like a shell would split it and run without a shell (write
``sh -c '...'`` for one). It gets the record as JSON on stdin and as ``FRAMEQC_*``
environment variables (:func:`hook_env`). A decision is an alert when its label is one
of the card's alert labels (``card.alerts``); a model whose card names none never
alerts, and ``--on-alert`` says so at start.

Without ``--alert-after``, every alert runs the hook. ``--alert-after N`` (``watch``,
``serve``): fire once when N consecutive decided frames are alerts, and again only after
a frame that is not an alert has ended the streak (so ``--alert-after 1`` is once per
streak). Frames that could not be decided neither extend nor end a streak. In ``serve``
the frames of all clients make one sequence, in the order they were decided. The streak
is kept in a file (:class:`Streak`), so it spans cron runs of ``watch --once`` and
restarts.

Hooks run one at a time in a worker thread, each bounded by a timeout (its whole process
group is killed then); a hanging or failing hook never delays a decision, and each
failure is one line on stderr. A hook is done when its own process exits: children it
leaves behind (holding its stderr) are not waited for. Of its stderr only the last
``STDERR_KEPT`` bytes are kept. Whatever a record holds, the worker goes on: a value no
environment variable can hold is cleaned or left out, and said once. Alerts arriving
while ``QUEUE_MAX`` hooks wait are counted, not queued without bound; at exit, a hook
still running after the grace is killed with its group and counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output import record
from frameqc.runtime.output.formats import shown
from frameqc.runtime.senders.streak import Streak, frame_identity

DEFAULT_TIMEOUT = 30.0  # seconds a hook may run
QUEUE_MAX = 100  # hooks waiting to run
STDERR_KEPT = 64 * 1024  # bytes of a hook's stderr kept (its tail): a flood costs no memory
VALUE_MAX = 64 * 1024  # bytes of one variable: exec refuses a string over 128 KiB
EXIT_POLL = 0.05  # seconds between two looks for a hook's exit where no pidfd can be had


def parse_command(cmd: str) -> list[str]:
    """``--on-alert CMD`` as argv (shell quoting rules, no shell); its program must exist."""
    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise UsageError(f"--on-alert {cmd!r}: {exc}") from None
    if not argv:
        raise UsageError("--on-alert: an empty command")
    if shutil.which(argv[0]) is None:
        raise UsageError(f"--on-alert: {argv[0]}: no such program (or not executable)")
    return argv


def _env_name(name: str) -> str:
    return "FRAMEQC_" + re.sub(r"[^A-Z0-9_]", "_", name.upper())


#: Secrets of frameqc's own that a hook has no business with (it posts to chat rooms).
_KEPT_FROM_HOOKS = frozenset({b"FRAMEQC_INFLUX_TOKEN"})


def hook_env(rec: dict, streak: int) -> dict[str, str]:
    """The record as ``FRAMEQC_<FIELD>`` variables (``FRAMEQC_P_<LABEL>`` per label).

    Derived from :data:`FIELDS`; booleans are ``true``/``false``, fields without a value
    are not set. ``FRAMEQC_STREAK`` is the number of consecutive alerts so far. In a
    hook, ``FRAMEQC_MODEL`` is the model's id, not a path.
    """
    env = {"FRAMEQC_STREAK": str(streak)}
    for f in record.FIELDS:
        value = rec.get(f.name)
        if f.kind == "probabilities":
            env.update({_env_name(f"p_{k}"): _number(p) for k, p in
                        (value.items() if isinstance(value, dict) else ())})
        elif isinstance(value, bool):
            env[_env_name(f.name)] = "true" if value else "false"
        elif value is not None:
            env[_env_name(f.name)] = str(value)
    return env


def _number(p: object) -> str:
    return repr(float(p)) if isinstance(p, (int, float)) else str(p)


def env_bytes(env: dict[str, str]) -> tuple[dict[bytes, bytes], dict[str, str]]:
    """``env`` as the bytes an environment holds, and what had to change, by variable.

    A file name that is not UTF-8 goes as its own bytes (Python holds it with
    ``surrogateescape``), so the hook gets the real path. NUL bytes (a header padded
    with them) are removed: no variable can hold one. Other text with no bytes (a lone
    surrogate) is written as ``\\u`` escapes; a value over ``VALUE_MAX`` is left out.
    """
    out: dict[bytes, bytes] = {}
    changed: dict[str, str] = {}
    for name, value in env.items():
        try:
            data = os.fsencode(value)
        except UnicodeEncodeError:
            data = value.encode("utf-8", "backslashreplace")
            changed[name] = "characters with no bytes, written as \\u escapes"
        if b"\0" in data:
            data = data.replace(b"\0", b"")
            changed[name] = "NUL bytes, removed"
        if len(data) > VALUE_MAX:
            changed[name] = f"over {VALUE_MAX} bytes, left out"
            continue
        out[os.fsencode(name)] = data
    return out, changed


class AlertHook:
    """A destination of :class:`~frameqc.runtime.output.destinations.Destinations`: runs
    CMD on alerts.

    Parameters
    ----------
    cmd : str
        ``--on-alert CMD``.
    alerts : sequence of str, optional
        The card's alert labels; None where :meth:`new_card` brings them (the server's).
    after : int, optional
        ``--alert-after N``; without it, every alert runs the hook.
    timeout : float
        Seconds a hook may run before its process group is killed.
    streak : Path, optional
        The file the streak is kept in (:func:`streak_beside`).
    """

    def __init__(self, cmd: str, alerts: Sequence[str] | None, after: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, err: TextIO | None = None,
                 streak: Path | None = None) -> None:
        self.argv = parse_command(cmd)
        self.alerts = frozenset(alerts or ())
        self.streak = Streak(after, streak)
        self.timeout = timeout
        self.err = err or sys.stderr
        self.queue: queue.Queue[tuple[dict, int]] = queue.Queue(QUEUE_MAX)
        self.fired = self.ran = self.failed = self.dropped = self.cut = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stopped = threading.Event()  # at exit, after the grace: run nothing more
        self._running: subprocess.Popen | None = None  # the hook now running, until reaped
        self._reaping = threading.Lock()  # no group is killed once its leader is reaped
        self._said: set[str] = set()
        self._streak_said: str | None = None
        self._say_streak()
        if alerts is not None and not self.alerts:
            self._say_no_alerts()
        self._thread = threading.Thread(target=self._loop, name="frameqc-hook", daemon=True)
        self._thread.start()

    def __call__(self, rec: dict, timings: dict[str, float]) -> None:
        label = rec.get("label")
        alert = None if "error" in rec else isinstance(label, str) and label in self.alerts
        frame = frame_identity(rec.get("path")) if alert else None  # a stat, alerts only
        with self._lock:  # the server calls this from several handler threads
            fire = self.streak(alert, frame)
            count = self.streak.count
            self.fired += fire
            self._say_streak()
        if not fire:
            return
        try:
            self.queue.put_nowait((rec, count))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            self._say(f"{QUEUE_MAX} hooks are waiting; alert for {rec.get('path')} not run")

    def new_card(self, card, say: bool = True) -> None:
        """The served model's card (at start, and after a reload): its alert labels from
        now on; a change is said unless ``say`` is false (the first card)."""
        alerts = frozenset(card.alerts)
        if not say and not alerts:
            self._say_no_alerts()
        if alerts == self.alerts:
            return
        self.alerts = alerts
        if say:
                self._say(f"alert labels now {', '.join(card.alerts)}" if alerts else
                      "the new model's card names no alert labels: the hook will not run")

    def _say_no_alerts(self) -> None:
        self._say("the model's card names no alert labels: no decision is an alert, "
                  "so the hook will not run")

    def health(self) -> dict:
        return {"sink": "on-alert", "command": shlex.join(self.argv),
                "queue": self.queue.qsize(), "fired": self.fired, "ran": self.ran,
                "failed": self.failed, "dropped": self.dropped}

    def close(self, wait: float | None = None) -> None:
        """Let waiting hooks run (at most ``wait`` seconds, default two timeouts).

        Then the hook still running is killed with its process group, and it and those
        still waiting are counted in one line.
        """
        self._closing.set()
        self._thread.join(2 * self.timeout if wait is None else wait)
        if not self._thread.is_alive():
            return
        self._stopped.set()
        left = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
                left += 1
        with self._reaping:
            if self._running is not None:
                with contextlib.suppress(OSError):
                    os.killpg(self._running.pid, signal.SIGKILL)
        self._thread.join(5)  # it reaps the one killed, and counts it
        self._say(f"at exit: {self.cut} alert hook{'' if self.cut == 1 else 's'} cut short "
                  f"(killed), {left} not run")

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                rec, count = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if self._stopped.is_set():
                return
            try:
                problem = self.run(rec, count)
            except Exception as exc:  # one record, whatever it holds, must not stop the hooks
                problem = f"not run ({type(exc).__name__}: {exc})"
            if self._stopped.is_set() and problem:
                self.cut += 1  # killed at exit: said in close's line
                return
            self.ran += 1
            if problem:
                self.failed += 1
                self._say(f"{shlex.join(self.argv)} for {rec.get('path')}: {problem}")

    def environment(self, rec: dict, count: int) -> dict[bytes, bytes]:
        """frameqc's environment and the record's variables; each change said once."""
        env, changed = env_bytes(hook_env(rec, count))
        for name, what in changed.items():
            if name not in self._said:
                self._said.add(name)
                self._say(f"{name} of {rec.get('path')} held {what} (said once; the record "
                          "on stdin is as it was)")
        inherited = {k: v for k, v in os.environb.items() if k not in _KEPT_FROM_HOOKS}
        return {**inherited, **env}

    def run(self, rec: dict, count: int) -> str | None:
        """Run the hook once; what went wrong, in a few words, or None."""
        env = self.environment(rec, count)
        data = json.dumps(shown(rec)).encode() + b"\n"  # as --format json prints it
        start = time.monotonic()
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env, start_new_session=True)
        except OSError as exc:
            return f"cannot run it ({exc.strerror or exc})"
        self._running = proc
        deadline = 0.0 if self._stopped.is_set() else start + self.timeout  # exit came
        try:
            tail, exited = _attend(proc, data, deadline)
        finally:
            with self._reaping:
                if proc.poll() is None:  # timed out (or an error here): the whole group
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
                self._running = None
        if not exited:
            return f"timed out after {self.timeout:g} s (killed)"
        if proc.returncode:
            said = tail.decode("utf-8", "replace").strip().splitlines()
            why = f"exited with {proc.returncode}" if proc.returncode > 0 else \
                f"killed by signal {-proc.returncode}"
            return why + (f": {said[-1][:200]}" if said else "") + \
                f" after {time.monotonic() - start:.1f} s"
        return None

    def _say_streak(self) -> None:
        problem = self.streak.problem
        if problem != self._streak_said:
            self._streak_said = problem
            if problem:
                self._say(f"--alert-after: {problem}; the streak is kept in memory"
                          if self.streak.after is not None else
                          f"{problem}; the last alert is remembered in this run only (a frame "
                          "taken again by a later run may alert twice)")

    def _say(self, text: str) -> None:
        self.err.write(f"frameqc: --on-alert: {text}\n")
        self.err.flush()


def _attend(proc: subprocess.Popen, data: bytes, deadline: float) -> tuple[bytes, bool]:
    """Give ``proc`` its stdin and keep its stderr's tail until it exits or ``deadline``.

    Returns the tail and whether it exited. Only the hook's own exit counts (a pidfd says
    it; where none can be had, a look every ``EXIT_POLL`` s): a child it left with its
    stderr (``cmd &``) is not waited for; what is in the pipe when the hook exits is
    read, no more. A hook that does not read its stdin is not waited for either.
    """
    tail = bytearray()
    try:
        exit_fd: int | None = os.pidfd_open(proc.pid)
    except OSError:  # an old kernel, or a container's seccomp profile
        exit_fd = None
    out, err = proc.stdin, proc.stderr
    assert out is not None and err is not None
    sel = selectors.DefaultSelector()
    try:
        os.set_blocking(out.fileno(), False)
        os.set_blocking(err.fileno(), False)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ, "exit")
        sel.register(err, selectors.EVENT_READ, "err")
        sel.register(out, selectors.EVENT_WRITE, "in")
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left if exit_fd is not None else min(left, EXIT_POLL)):
                if key.data == "in":
                    try:
                        data = data[os.write(out.fileno(), data):]
                    except BlockingIOError:
                        continue
                    except OSError:  # it closed its stdin: it wants no more
                        data = b""
                    if not data:
                        sel.unregister(out)
                        with contextlib.suppress(OSError):
                            out.close()
                elif key.data == "err" and _read(err.fileno(), tail) is False:
                    sel.unregister(err)
            if proc.poll() is not None:
                for _ in range(STDERR_KEPT // 65536 + 1):  # what it wrote before exiting
                    if not _read(err.fileno(), tail):
                        break
                return bytes(tail), True
        return bytes(tail), False
    finally:
        sel.close()
        if exit_fd is not None:
            os.close(exit_fd)
        for pipe in (out, err):
            with contextlib.suppress(OSError):
                pipe.close()


def _read(fd: int, tail: bytearray) -> bool | None:
    """Append what ``fd`` has to ``tail``, keeping its last ``STDERR_KEPT`` bytes.

    True when something was read, None when nothing is there now, False at its end.
    """
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return False
    tail += chunk
    del tail[:-STDERR_KEPT]
    return bool(chunk)
