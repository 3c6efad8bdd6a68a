"""The two ways frameqc writes files: whole-line appends and atomic replacement."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from frameqc.runtime.util.files import append_whole, atomic_file, write_atomic

#: Appends in a child whose file-size limit is ``limit`` bytes: the kernel makes the write
#: that crosses it short, and the next one fail (EFBIG), as a filling disk does.
_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    from frameqc.runtime.util.files import append_whole
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    try:
        append_whole(sys.argv[1], sys.argv[3].encode())
    except OSError as exc:
        print(exc.errno)
""")


def _append_limited(path, limit: int, data: str) -> str:
    done = subprocess.run([sys.executable, "-c", _LIMITED, str(path), str(limit), data],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_short_write_fails_and_leaves_whole_lines(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\n")
    assert _append_limited(log, 10, "a line longer than the room left\n") == "27"  # EFBIG
    assert log.read_bytes() == b"one\n"
    append_whole(log, b"two\n")
    assert log.read_bytes() == b"one\ntwo\n"


def test_a_torn_tail_is_cut_before_the_next_line(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"one\ntwo\nthr")
    append_whole(log, b"four\n")
    assert log.read_bytes() == b"one\ntwo\nfour\n"
    torn = tmp_path / "torn"
    torn.write_bytes(b"x" * 200_000)  # no newline at all: nothing whole to keep
    append_whole(torn, b"y\n")
    assert torn.read_bytes() == b"y\n"


def test_atomic_write_never_follows_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    page = tmp_path / "index.html"
    for guess in (".index.html.tmp", "index.html.tmp", ".index.html.part"):
        (tmp_path / guess).symlink_to(victim)
    write_atomic(page, "<p>night</p>")
    assert page.read_text() == "<p>night</p>" and victim.read_text() == "precious"
    assert not page.is_symlink()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    page = tmp_path / "index.html"
    page.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(page) as fh:
        fh.write(b"half")
        raise RuntimeError("disk full")
    assert page.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["index.html"]


def test_two_writers_at_once_both_finish(tmp_path):
    page = tmp_path / "index.html"
    with atomic_file(page) as a, atomic_file(page) as b:
        a.write(b"first")
        b.write(b"second")
    assert page.read_bytes() == b"first"
    assert sorted(os.listdir(tmp_path)) == ["index.html"]
