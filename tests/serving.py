"""A real ``frameqc serve`` process and the upstream TCP client, for the server tests."""

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import run_cli


def png_bytes(seed: int) -> bytes:
    from frameqc.runtime.data.reader import FITS, Frame
    from frameqc.runtime.data.synthetic import make_frame
    from frameqc.runtime.model.recipes import AsinhRecipe

    plane = AsinhRecipe().prepare(Frame(FITS, make_frame("good", 681, seed))).preview()
    buf = io.BytesIO()
    Image.fromarray(np.repeat(plane[:, :, None], 3, axis=2)).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """A ``frameqc serve`` subprocess, waited for until its socket answers.

    It never outlives its test: a server that fails to start is killed, ``stop`` kills one
    that ignores SIGTERM (and says so), and ``with Server(...)`` kills it whatever happens.
    """

    def __init__(self, model: Path, sock: Path, *extra: str, env: dict | None = None,
                 user: int | None = None, preexec_fn=None) -> None:
        self.sock = sock
        self.log = sock.with_suffix(".stderr")
        with open(self.log, "w") as err:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "frameqc.runtime.cli", "serve", "--model", str(model),
                 "--socket", str(sock), *extra], stdout=subprocess.DEVNULL, stderr=err,
                env=None if env is None else {**os.environ, **env}, user=user,
                preexec_fn=preexec_fn)
        try:
            self._wait_started()
        except BaseException:
            self.kill()
            raise

    def _wait_started(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.sock))
                self.tcp_port = self._port()
                return
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def internal_errors(self) -> list[str]:
        """The log lines of handler crashes (``internal error``) and of any traceback."""
        return [line for line in self.log.read_text().splitlines()
                if "internal error" in line or "Traceback" in line]

    def _port(self) -> int | None:
        for _ in range(50):
            m = re.search(r"tcp:[^,;]*:(\d+)", self.log.read_text())
            if m or "--tcp" not in self.proc.args:
                return int(m.group(1)) if m else None
            time.sleep(0.1)
        return None

    def status(self) -> dict:
        code, out, err = run_cli("status", "--json", "--socket", str(self.sock))
        assert code == 0, err
        return json.loads(out)

    def rss_kb(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Its exit status after ``sig``; killed (and an AssertionError) if it lives on."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server ignored signal {sig} for 30 s; killed") from None


def upstream(port: int, payload: bytes, close_write: bool = False) -> bytes:
    """The upstream client: length, bytes, then read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(payload)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def frame_payload(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data
