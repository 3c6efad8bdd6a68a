"""The command line itself: help texts, threads, usage errors."""

import os
import subprocess
import sys

import pytest

from conftest import run_cli

COMMANDS = ["classify", "info", "bin", "serve", "status", "demo", "export"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_shows_an_example(command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "example" in out and f"frameqc {command}" in out.split("example")[1]


def test_top_level_help_lists_commands():
    code, out, _ = run_cli("--help")
    assert code == 0 and all(c in out for c in COMMANDS)


def test_threads_follow_the_affinity_mask():
    script = ("import os; os.sched_setaffinity(0, {0}); "
              "from frameqc.runtime.model import available_cpus, resolve_threads; "
              "print(available_cpus(), resolve_threads(None), resolve_threads(3))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "FRAMEQC_THREADS"})
    assert out.stdout.split() == ["1", "1", "3"]


def test_threads_from_environment(monkeypatch):
    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.model import resolve_threads

    monkeypatch.setenv("FRAMEQC_THREADS", "5")
    assert resolve_threads(None) == 5 and resolve_threads(2) == 2
    monkeypatch.setenv("FRAMEQC_THREADS", "many")
    with pytest.raises(UsageError):
        resolve_threads(None)


@pytest.mark.parametrize("argv", [["classify"], ["classify", "--format", "xml", "f"],
                                  ["bin", "-b", "x", "f"], ["nonsense"], []])
def test_usage_errors_exit_2_without_traceback(argv):
    code, _, err = run_cli(*argv)
    assert code == 2 and "Traceback" not in err


def test_classify_with_no_frames(tmp_path, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_cli("classify", "--model", "m.onnx", str(tmp_path), "-")
    assert code == 2 and "no frames given" in err
