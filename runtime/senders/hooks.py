"""Alert hooks: run the operator's command when a decision is an alert, off the decision path.

``--on-alert CMD`` is split like a shell would split it and run without a shell (write
``sh -c '...'`` for one). It gets the record as JSON on stdin and as ``FRAMEQC_*``
environment variables (:func:`hook_env`). A decision is an alert when its label is one
of the card's alert labels (``card.alerts``); a model whose card names none never
alerts, and ``--on-alert`` says so at start.

Without ``--alert-after``, every alert runs the hook. ``--alert-after N`` (resident
modes): fire once when N consecutive decided frames are alerts, and again only after a
frame that is not an alert has ended the streak (so ``--alert-after 1`` is once per
streak). Frames that could not be decided neither extend nor end a streak. In ``serve``
the frames of all clients make one sequence, in the order they were decided.

Hooks run one at a time in a worker thread, each bounded by a timeout (its whole process
group is killed then); a hanging or failing hook never delays a decision, and each
failure is one line on stderr. Alerts arriving while ``QUEUE_MAX`` hooks wait are
counted, not queued without bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output import record

DEFAULT_TIMEOUT = 30.0  # seconds a hook may run
QUEUE_MAX = 100  # hooks waiting to run


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
            env.update({_env_name(f"p_{k}"): repr(float(p)) for k, p in (value or {}).items()})
        elif isinstance(value, bool):
            env[_env_name(f.name)] = "true" if value else "false"
        elif value is not None:
            env[_env_name(f.name)] = str(value)
    return env


class Streak:
    """The ``--alert-after N`` rule: True once per run of N consecutive alerts.

    Without N, True for every alert. ``count`` is the length of the current run.
    """

    def __init__(self, after: int | None = None) -> None:
        self.after, self.count = after, 0

    def __call__(self, alert: bool | None) -> bool:
        """``alert`` is None for a frame with no decision (it changes nothing)."""
        if alert is None:
            return False
        self.count = self.count + 1 if alert else 0
        return bool(alert) and (self.after is None or self.count == self.after)


class AlertHook:
    """A destination of :class:`~frameqc.runtime.output.destinations.Destinations`: runs
    CMD on alerts.

    Parameters
    ----------
    cmd : str
        ``--on-alert CMD``.
    alerts : sequence of str
        The card's alert labels.
    after : int, optional
        ``--alert-after N``; without it, every alert runs the hook.
    timeout : float
        Seconds a hook may run before its process group is killed.
    """

    def __init__(self, cmd: str, alerts: Sequence[str], after: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, err: TextIO | None = None) -> None:
        self.argv = parse_command(cmd)
        self.alerts = frozenset(alerts)
        self.streak = Streak(after)
        self.timeout = timeout
        self.err = err or sys.stderr
        self.queue: queue.Queue[tuple[dict, int]] = queue.Queue(QUEUE_MAX)
        self.fired = self.ran = self.failed = self.dropped = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        if not self.alerts:
            self._say("the model's card names no alert labels: no decision is an alert, "
                      "so the hook will not run")
        self._thread = threading.Thread(target=self._loop, name="frameqc-hook", daemon=True)
        self._thread.start()

    def __call__(self, rec: dict, timings: dict[str, float]) -> None:
        alert = None if "error" in rec else rec.get("label") in self.alerts
        with self._lock:  # the server calls this from several handler threads
            fire = self.streak(alert)
            count = self.streak.count
            self.fired += fire
        if not fire:
            return
        try:
            self.queue.put_nowait((rec, count))
        except queue.Full:
            self.dropped += 1
            self._say(f"{QUEUE_MAX} hooks are waiting; alert for {rec.get('path')} not run")

    def health(self) -> dict:
        return {"sink": "on-alert", "command": shlex.join(self.argv),
                "queue": self.queue.qsize(), "fired": self.fired, "ran": self.ran,
                "failed": self.failed, "dropped": self.dropped}

    def close(self, wait: float | None = None) -> None:
        """Let waiting hooks run (at most ``wait`` seconds, default two timeouts).

        Those still waiting then are dropped and counted in one line; the one running
        ends within its timeout.
        """
        self._closing.set()
        self._thread.join(2 * self.timeout if wait is None else wait)
        if self._thread.is_alive():
            left = 0
            with contextlib.suppress(queue.Empty):
                while True:
                    self.queue.get_nowait()
                    left += 1
            self._say(f"{left} alert hooks still waiting at exit were not run")

    def _loop(self) -> None:
        while True:
            try:
                rec, count = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            problem = self.run(rec, count)
            self.ran += 1
            if problem:
                self.failed += 1
                self._say(f"{shlex.join(self.argv)} for {rec.get('path')}: {problem}")

    def run(self, rec: dict, count: int) -> str | None:
        """Run the hook once; what went wrong, in a few words, or None."""
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env={**os.environ, **hook_env(rec, count)},
                                    start_new_session=True)
        except OSError as exc:
            return f"cannot run it ({exc.strerror or exc})"
        start = time.monotonic()
        try:
            _, stderr = proc.communicate(json.dumps(rec).encode() + b"\n", self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            return f"timed out after {self.timeout:g} s (killed)"
        if proc.returncode:
            said = stderr.decode("utf-8", "replace").strip().splitlines()
            why = f"exited with {proc.returncode}" if proc.returncode > 0 else \
                f"killed by signal {-proc.returncode}"
            return why + (f": {said[0][:200]}" if said else "") + \
                f" after {time.monotonic() - start:.1f} s"
        return None

    def _say(self, text: str) -> None:
        self.err.write(f"frameqc: --on-alert: {text}\n")
        self.err.flush()

