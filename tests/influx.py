"""A real InfluxDB 1.x (Debian's ``influxd``) for the tests and the sink benchmark.

Its config and data live in a folder of the caller's; it binds free ports on 127.0.0.1
and sends no reports. Stop and start keep the data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

DB = "frameqc"
INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Influx:
    """A real ``influxd`` with its data in ``root``; stop and start keep the data."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.config = root / "influxdb.conf"
        self.config.write_text(f"""
reporting-enabled = false
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{root / 'meta'}"
[data]
  dir = "{root / 'data'}"
  wal-dir = "{root / 'wal'}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
""")
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.write_url = f"{self.url}/write?db={DB}"

    def start(self) -> None:
        with open(self.root / "influxd.log", "ab") as log:
            self.proc = subprocess.Popen([INFLUXD, "-config", str(self.config)], stdout=log,
                                         stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "influxd.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
                    if r.status == 204:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("influxd did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def query(self, q: str, db: str | None = DB) -> list[dict]:
        """The series of the first statement's result (``epoch=ns``)."""
        params = {"q": q, "epoch": "ns", **({"db": db} if db else {})}
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=30) as r:
            result = json.load(r)["results"][0]
        assert "error" not in result, result["error"]
        return result.get("series", [])

    def rows(self, q: str) -> list[dict]:
        out = []
        for series in self.query(q):
            for values in series["values"]:
                out.append({**series.get("tags", {}), **dict(zip(series["columns"], values,
                                                                 strict=True))})
        return out

    def reset(self) -> None:
        self.query(f'DROP DATABASE "{DB}"', db=None)
        self.query(f'CREATE DATABASE "{DB}"', db=None)
