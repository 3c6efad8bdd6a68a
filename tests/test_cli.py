"""The command line itself: help texts, threads, usage errors."""

import os
import subprocess
import sys

import pytest

from helpers import frameqc, one_line, run_cli

COMMANDS = ["classify", "evaluate", "label", "info", "bin", "serve", "status", "demo", "export",
            "train", "watch", "archive", "night"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_shows_an_example(command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "example" in out and f"frameqc {command}" in out.split("example")[1]


def test_top_level_help_lists_commands():
    code, out, _ = run_cli("--help")
    assert code == 0 and all(c in out for c in COMMANDS)


def test_threads_follow_the_affinity_mask():
    script = ("import os; os.sched_setaffinity(0, {0}); "
              "from frameqc.runtime.model.cpu import available_cpus, resolve_threads; "
              "print(available_cpus(), resolve_threads(None), resolve_threads(3))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "FRAMEQC_THREADS"})
    assert out.stdout.split() == ["1", "1", "3"]


def test_threads_from_environment(monkeypatch):
    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.model.cpu import resolve_threads

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


@pytest.mark.parametrize("files,expected", [
    ({"cpu.max": "150000 100000\n"}, 1), ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "400000 100000"}, 4),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_cgroup_quota_v1_and_v2(tmp_path, files, expected):
    from frameqc.runtime.model.cpu import cgroup_cpu_quota

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == expected


def test_log_is_whole_with_concurrent_writers(tmp_path):
    """Four processes appending at once: every line whole, none lost."""
    import json

    script = ("import sys; from frameqc.runtime.output.formats import append_log\n"
              "for i in range(200):\n"
              "    append_log(sys.argv[1], {'path': 'x' * 3000, 'writer': sys.argv[2], 'i': i},"
              " {'read': 0.1})\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "log"), str(w)])
             for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (tmp_path / "log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert len(entries) == 800
    assert {(e["writer"], e["i"]) for e in entries} == {(str(w), i) for w in range(4)
                                                         for i in range(200)}


def test_a_one_shot_leaves_no_onnxruntime_telemetry(runtime_model, fits_dir, tmp_path):
    """onnxruntime 1.32 writes a device id and an event database under ~/.cache (and sends
    a ProcessInfo event) from every process, unless ORT_DISABLE_TELEMETRY is set before its
    environment is created; where HOME cannot be written it printed a warning besides."""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(tmp_path), FRAMEQC_SOCKET=str(tmp_path / "none.sock"),
               XDG_CACHE_HOME=str(tmp_path / ".cache"), FRAMEQC_CACHE=str(tmp_path / "fq"))
    out = subprocess.run([sys.executable, "-m", "frameqc.runtime.cli", "classify", "--model",
                          str(runtime_model["fp32"]), str(fits_dir / "full_good.fits")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert not (tmp_path / ".cache" / "Microsoft").exists()


def test_classify_reads_the_model_card_once(runtime_model, fits_dir, tmp_path, monkeypatch):
    """One ``frameqc classify FILE`` parses the card once: the session is handed the card
    the classifier read, and --on-alert takes its alert labels from the same card."""
    from frameqc.runtime.model.card import ModelCard

    reads = []
    parse = ModelCard.from_metadata.__func__

    def counted(cls, meta):
        reads.append(1)
        return parse(cls, meta)

    monkeypatch.setattr(ModelCard, "from_metadata", classmethod(counted))
    monkeypatch.setenv("FRAMEQC_SOCKET", str(tmp_path / "nobody-serves.sock"))
    frame = str(fits_dir / "prebinned_227.fits")
    code, out, err = run_cli("classify", "--model", str(runtime_model["fp32"]), "--on-alert",
                             "true", frame)
    assert code == 0, err
    assert out.endswith(f" {frame}\n")
    assert len(reads) == 1


def test_a_model_that_cannot_load_leaves_no_output_behind(runtime_model, fits_dir, tmp_path,
                                                          monkeypatch):
    """The card is read before any frame, the weights when the first frame needs them: a
    model whose weights are gone prints no CSV header and makes no --sort-into folders."""
    import shutil

    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    shutil.copy(runtime_model["fp32"], model)  # the graph and its card, not its weights
    monkeypatch.setenv("FRAMEQC_SOCKET", str(tmp_path / "nobody-serves.sock"))
    code, out, err = run_cli("classify", "--model", str(model), "-f", "csv", "--sort-into",
                             str(tmp_path / "sorted"), str(fits_dir / "prebinned_227.fits"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert out == "" and not (tmp_path / "sorted").exists()


# -- unwritable outputs ------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--log", "--preview", "--sort-into"])
def test_unwritable_outputs_are_usage_errors_before_any_work(runtime_model, good, tmp_path,
                                                             option):
    blocker = tmp_path / "a_file"
    blocker.write_text("precious")  # as root nothing is unwritable: a file as the folder is
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), option,
                   str(blocker / "out"), str(good))
    assert proc.returncode == 2 and one_line(proc.stderr) and option in proc.stderr
    assert proc.stdout == "" and blocker.read_text() == "precious"


def test_log_failing_mid_run_keeps_every_decision(runtime_model, tmp_path, fits_dir,
                                                  monkeypatch):
    from frameqc.runtime.output import formats as output

    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "append_log", flaky)
    frames = [str(fits_dir / n) for n in ("full_good.fits", "full_shutter.fits",
                                          "prebinned_227.fits")]
    code, out, err = run_cli("classify", "--model", str(runtime_model["int8"]), "--log",
                             str(tmp_path / "log"), *frames)
    assert code == 1 and len(out.splitlines()) == 3
    assert err.strip() == ("frameqc: --log: cannot write (No space left on device); "
                           "classifying goes on")


@pytest.mark.parametrize("argv,match", [
    (["serve", "--timeout", "0"], "--timeout: must be greater than 0"),
    (["serve", "--timeout", "-3"], "--timeout: must be greater than 0"),
    (["serve", "--timeout", "nan"], "--timeout: must be a finite number"),
    (["watch", "--interval", "0", "."], "--interval: must be greater than 0"),
    (["watch", "--settle", "-1", "."], "--settle: must be 0 or more"),
    (["classify", "--threshold", "1.5", "x.fits"], "--threshold: must be in (0, 1]"),
    (["serve", "--max-bytes", "0"], "--max-bytes: must be a whole number >= 1"),
    (["serve", "--tcp", "127.0.0.1:99999"], "--tcp wants HOST:PORT"),
    (["serve", "--allow", "/nonexistent"], "--allow /nonexistent: not a directory"),
])
def test_nonsense_options_are_one_line_usage_errors(argv, match, tmp_path, runtime_model):
    proc = frameqc(*argv, "--model", str(runtime_model["int8"]), env={
        "FRAMEQC_SOCKET": str(tmp_path / "s.sock")})
    assert proc.returncode == 2 and match in proc.stderr and one_line(proc.stderr)
    assert not (tmp_path / "s.sock").exists()  # refused before binding anything
