"""File names that are not UTF-8 (``x\\xff.fits`` from an old Samba or NFS share).

frameqc opens such a frame by its real bytes, and writes its name in one form wherever a
person or another program reads it: each byte that is not UTF-8 as ``\\xHH``
(docs/classifying.md). Every output format, ``--log``, stderr and ``watch`` are run here
in a child process under a UTF-8 locale, whose stdout is strict UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil

import pytest

from helpers import frameqc

UTF8 = {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}


@pytest.fixture()
def odd(fits_dir, tmp_path) -> tuple[str, str, str]:
    """A frame named ``x\\xff.fits``, a missing ``gone\\xfe.fits``, and the folder."""
    folder = os.path.join(os.fsencode(tmp_path), b"in")
    os.mkdir(folder)
    frame = os.path.join(folder, b"x\xff.fits")
    shutil.copy(fits_dir / "prebinned_227.fits", frame)
    os.utime(frame, (1, 1))  # long settled, for watch
    return os.fsdecode(frame), os.fsdecode(os.path.join(folder, b"gone\xfe.fits")), \
        os.fsdecode(folder)


def test_the_one_form():
    from frameqc.runtime.util.text import readable

    assert readable("plain é name.fits") == "plain é name.fits"  # UTF-8: as it is
    assert readable(os.fsdecode(b"x\xff\xfe.fits")) == "x\\xff\\xfe.fits"
    assert readable("lone \ud800") == "lone \\ud800"  # a surrogate from elsewhere
    assert readable(os.fsdecode(b"x\xff.fits")).encode("utf-8")


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "influx"])
def test_every_format_writes_such_a_name(runtime_model, odd, tmp_path, fmt):
    frame, gone, _ = odd
    shown, shown_gone = (os.fsencode(p).decode("utf-8", "backslashreplace") for p in (frame,
                                                                                       gone))
    log = tmp_path / "log"
    done = frameqc("classify", "--model", str(runtime_model["int8"]), "-f", fmt, "--log",
                   str(log), frame, gone, env=UTF8)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr == f"frameqc: {shown_gone}: no such file\n"
    out = done.stdout
    if fmt == "text":
        assert out.endswith(f" {shown}\n") and len(out.splitlines()) == 1
    elif fmt == "json":
        assert [json.loads(ln)["path"] for ln in out.splitlines()] == [shown, shown_gone]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["path"] for r in rows] == [shown, shown_gone]
    else:  # a backslash in a string field is escaped: InfluxDB stores x\xff.fits
        lines = out.splitlines()
        assert len(lines) == 2 and f'path="{_escaped(shown)}"' in lines[0]
        assert f'path="{_escaped(shown_gone)}"' in lines[1]
    assert [json.loads(ln)["path"] for ln in log.read_text("utf-8").splitlines()] == [
        shown, shown_gone]


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\")


def test_watch_decides_such_a_name_once(runtime_model, odd, tmp_path):
    frame, _, folder = odd
    shown = os.fsencode(frame).decode("utf-8", "backslashreplace")
    argv = ("watch", "--model", str(runtime_model["int8"]), "--state",
            str(tmp_path / "state"), "--once", folder)
    done = frameqc(*argv, env=UTF8)
    assert done.returncode == 0 and done.stdout.endswith(f" {shown}\n"), done.stderr
    again = frameqc(*argv, env=UTF8)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
