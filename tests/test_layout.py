"""The house rules, checked: layers import downwards only, one owner of sessions, one record."""

import ast
import csv
import io
import json
import socket
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime"

#: The runtime's folders, lowest layer first: a module may import its own layer or lower.
LAYERS = [("errors", "util"), ("data",), ("model",), ("engine",), ("output",), ("senders",),
          ("serving",), ("lifecycle", "archive", "demo", "web"), ("commands",), ("cli",)]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> str:
    return module.split(".")[2] if module.count(".") >= 2 else "__init__"


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth of the code (function bodies too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def _runtime_modules() -> list[Path]:
    return sorted(p for p in RUNTIME.rglob("*.py") if p.name != "__init__.py" or p.parent
                  != RUNTIME)


def test_every_runtime_module_is_in_a_layer():
    for path in _runtime_modules():
        top = path.relative_to(RUNTIME).parts[0].removesuffix(".py")
        assert top in RANK, f"{path}: add its folder to LAYERS"


@pytest.mark.parametrize("path", _runtime_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_downwards_only(path):
    mine = path.relative_to(RUNTIME).parts[0].removesuffix(".py")
    for module in _imports(path):
        assert not module.startswith(("torch", "frameqc.export")), f"{path} imports {module}"
        if module.startswith("frameqc.runtime.") or module == "frameqc.runtime":
            other = _layer(module)
            if other == "__init__":
                continue  # the package itself: its version
            assert RANK[other] <= RANK[mine], f"{path} ({mine}) imports {module} ({other})"


def test_encoders_sit_below_their_senders():
    """output/ holds every encoding of the record (the line protocol too) and imports
    nothing above it; the senders use those encodings from above."""
    assert RANK["output"] < RANK["senders"] < RANK["serving"]
    assert (RUNTIME / "output" / "line_protocol.py").exists()
    for path in (RUNTIME / "output").glob("*.py"):
        for module in _imports(path):
            assert not module.startswith("frameqc.runtime.senders"), f"{path} imports {module}"


def test_one_place_turns_a_result_into_a_record():
    """``record()`` is called by the destinations object alone: every command's record is
    built there and sent on from there."""
    callers = []
    for path in _runtime_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                    node.func, "attr", None)) == "record":
                callers.append(str(path.relative_to(ROOT)))
    assert callers == ["runtime/output/destinations.py"]


def test_only_the_session_module_builds_sessions():
    """bench/floor.py builds one too, on purpose, with options test_bench.py compares."""
    builders = []
    for path in [*ROOT.glob("runtime/**/*.py"), *ROOT.glob("export/*.py"),
                 *ROOT.glob("bench/*.py")]:
        if "InferenceSession(" in path.read_text():
            builders.append(str(path.relative_to(ROOT)))
    assert sorted(builders) == ["bench/floor.py", "runtime/model/session.py"]


def test_only_the_openvino_engine_compiles_and_only_the_session_module_opens_it():
    """OpenVINO's sessions are built in engines/openvino.py, asked for by session.py alone."""
    compilers, openers = [], []
    for path in [*ROOT.glob("runtime/**/*.py"), *ROOT.glob("export/*.py")]:
        text = path.read_text()
        if "compile_model(" in text:
            compilers.append(str(path.relative_to(ROOT)))
        if "OpenVINOSession(" in text and "class OpenVINOSession" not in text:
            openers.append(str(path.relative_to(ROOT)))
    assert compilers == ["runtime/model/engines/openvino.py"]
    assert openers == ["runtime/model/session.py"]


def test_onnxruntime_is_imported_with_its_telemetry_off():
    """Only model/__init__.py imports onnxruntime itself (after ORT_DISABLE_TELEMETRY):
    an import anywhere else, run first, would let it write and send its telemetry."""
    importers = []
    for path in [*ROOT.glob("runtime/**/*.py"), *ROOT.glob("export/*.py")]:
        text = path.read_text()
        if "import onnxruntime" in text or "from onnxruntime import" in text:
            importers.append(str(path.relative_to(ROOT)))
    assert importers == ["runtime/model/__init__.py"]


def test_no_module_is_a_god_module():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for p in [*ROOT.glob("runtime/**/*.py"), *ROOT.glob("export/*.py")]}
    assert sizes["runtime/cli.py"] <= 150
    assert {k: v for k, v in sizes.items() if v > 420} == {}


def test_every_command_is_a_module_of_its_own():
    from frameqc.runtime.commands import COMMANDS, load

    for name in COMMANDS:
        module = load(name)
        assert Path(module.__file__).name == f"{name}.py"
        assert callable(module.add_parser) and callable(module.run)


# -- one record, every encoding ----------------------------------------------------------

@pytest.fixture()
def extra_field(monkeypatch):
    """The record with one more field: every encoding must carry it without being told."""
    from frameqc.runtime.output import record

    field = record.Field("probe", "str", "a field added in one place",
                         lambda r, card: f"probe:{Path(r.path).name}", failed=True)
    monkeypatch.setattr(record, "FIELDS", (*record.FIELDS, field))
    return field


def test_every_encoding_carries_a_new_field(extra_field, runtime_model, fits_dir, tmp_path):
    import pyarrow as pa

    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.output.destinations import Destinations
    from frameqc.runtime.output.formats import Writer, log_line
    from frameqc.runtime.output.record import arrow_schema, flat

    clf = Classifier.load(runtime_model["fp32"], threads=1)
    card = clf.card
    frame = sorted(fits_dir.iterdir())[0]
    results = list(clf.run([str(frame), str(tmp_path / "missing.fits")]))
    recs = [Destinations(None).send(r, card).record for r in results]
    want = f"probe:{frame.name}"
    assert recs[0]["probe"] == want and recs[1]["probe"] == "probe:missing.fits"
    out = io.StringIO()
    Writer("json", out, io.StringIO(), card.labels).write(recs[0])
    assert json.loads(out.getvalue())["probe"] == want
    out = io.StringIO()
    Writer("csv", out, io.StringIO(), card.labels).write(recs[0])
    assert next(csv.DictReader(io.StringIO(out.getvalue())))["probe"] == want
    assert json.loads(log_line(recs[0], results[0].timings))["probe"] == want
    from frameqc.runtime.output.line_protocol import line
    from frameqc.runtime.senders.hooks import hook_env

    assert f'probe="{want}"' in line(recs[0]) and 'probe="probe:missing.fits"' in line(recs[1])
    assert hook_env(recs[0], 1)["FRAMEQC_PROBE"] == want
    table = pa.Table.from_pylist([flat(r, card.labels) for r in recs],
                                 schema=arrow_schema(card.labels))
    assert table.column("probe").to_pylist() == [want, "probe:missing.fits"]
    assert _server_reply(clf.wait_model(), str(frame))["probe"] == want


def _server_reply(model, path: str) -> dict:
    """One classify request answered by the server's own handler over a real socket."""
    from frameqc.runtime.serving.server import LocalHandler, ServerState

    class Server:  # what the handler asks of its socketserver
        service = ServerState(model, None, 1 << 20, 10.0, err=io.StringIO())

    ours, theirs = socket.socketpair()
    handler = threading.Thread(target=LocalHandler, args=(theirs, None, Server()), daemon=True)
    handler.start()
    try:
        ours.sendall((json.dumps({"op": "classify", "paths": [path]}) + "\n").encode())
        reader = ours.makefile("rb")
        return json.loads(reader.readline())["record"]
    finally:
        ours.close()
        handler.join(10)


def test_every_package_is_installed():
    """A sub-package missing from pyproject.toml works in a checkout and breaks `pip install .`."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"frameqc.runtime." + ".".join(p.parent.relative_to(RUNTIME).parts)
             for p in RUNTIME.rglob("__init__.py") if p.parent != RUNTIME}
    assert found - listed == set()
