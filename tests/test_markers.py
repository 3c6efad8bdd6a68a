"""The markers that CI's torch-free stage selects by are found, not remembered
(tests/marking.py): a test that needs torch without its mark cannot pass unnoticed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import NO_TORCH

TESTS = Path(__file__).parent
ROOT = TESTS.parent

#: torch made unimportable, as it is in the torch-free stage's venv; then pytest ARGV.
WITHOUT_TORCH = NO_TORCH + """
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""

PROJECT = {
    "pytest.ini": """
        [pytest]
        addopts = -p no:cacheprovider --strict-markers
        markers =
            torch: needs torch
            browser: drives chromium
            influxd: starts influxd
    """,
    # a stand-in, so that the check is the same (and light) with or without the real torch
    "torch/__init__.py": "",
    "late.py": """
        def use_torch():
            import torch
            return torch
    """,
    "imports_torch.py": "import torch\n",
    "conftest.py": """
        import pytest

        pytest_plugins = ["marking"]

        @pytest.fixture(scope="session")
        def net():
            import torch
            return torch

        @pytest.fixture()
        def deeper(net):
            return net
    """,
    "test_cases.py": """
        import pytest
        from late import use_torch

        def test_plain():
            pass

        def test_imports_torch_itself():
            import torch

        def test_through_a_fixture_of_a_fixture(deeper):
            pass

        def test_late_import_unmarked():
            use_torch()

        @pytest.mark.torch
        def test_late_import_marked():
            use_torch()
    """,
    "test_module_imports_a_torch_helper.py": """
        import imports_torch

        def test_a():
            pass
    """,
    "test_module_asks_for_torch.py": """
        import pytest

        torch = pytest.importorskip("torch")

        def test_b():
            pass
    """,
}


def _project(root: Path) -> Path:
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def _pytest(root: Path, *argv: str, torch: bool = True) -> subprocess.CompletedProcess:
    python = [sys.executable, "-m", "pytest"] if torch else [sys.executable, "-c", WITHOUT_TORCH]
    return subprocess.run([*python, "-q", "-rs", "--rootdir", str(root), *argv], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(TESTS)})


def _ids(out: str) -> set[str]:
    return {line for line in out.splitlines() if "::" in line}


def test_what_imports_torch_is_marked_torch(tmp_path):
    root = _project(tmp_path)
    proc = _pytest(root, "--collect-only", "-m", "not torch")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ids(proc.stdout) == {"test_cases.py::test_plain",
                                 "test_cases.py::test_late_import_unmarked"}
    proc = _pytest(root, "--collect-only", "-m", "torch")
    assert len(_ids(proc.stdout)) == 5, proc.stdout


def test_a_test_that_reaches_torch_unmarked_fails_and_says_why(tmp_path):
    proc = _pytest(_project(tmp_path), "-m", "not torch")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert ("test_cases.py::test_late_import_unmarked imports torch but is not marked torch"
            in proc.stdout)


def test_without_torch_its_modules_are_left_out_not_skipped(tmp_path):
    root = _project(tmp_path)
    (root / "torch" / "__init__.py").unlink()
    (root / "torch").rmdir()
    proc = _pytest(root, "-m", "not torch and not browser", torch=False)
    summary = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stdout  # the late import fails, nothing skips:
    assert re.match(r"1 failed, 1 passed, 3 deselected in ", summary), summary
    proc = _pytest(root, "-m", "not torch", "test_module_asks_for_torch.py", torch=False)
    assert proc.returncode == 5 and "no tests ran" in proc.stdout, proc.stdout  # named: same
    assert "skipped" not in proc.stdout
    proc = _pytest(root, "--collect-only", torch=False)  # asked for everything: say what is not
    assert "SKIPPED" in proc.stdout and "ModuleNotFoundError" in proc.stdout


def test_ci_torch_free_selection_collects_without_torch():
    """The suite as CI's torch-free stage selects it, where torch cannot be imported: it
    collects with no skip and no error (a skip fails that stage)."""
    expr = re.search(r'-m "([^"]+)"', (ROOT / ".ci" / "run").read_text()).group(1)
    assert "not torch" in expr
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, "--collect-only", "-q", "-rs",
                           "-p", "no:cacheprovider", "-m", expr], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+/\d+ tests collected \(\d+ deselected\) in ", summary), summary
    modules = {i.split("::")[0] for i in _ids(proc.stdout)}
    assert {"tests/test_server.py", "tests/test_reading.py", "tests/test_watch.py"} <= modules
    assert "tests/test_export.py" not in modules and "tests/test_classify.py" not in modules


def test_no_test_module_imports_conftest():
    """pytest loads conftest.py itself; what modules share is in helpers.py."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "conftest" in names:
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
