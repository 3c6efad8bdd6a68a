"""Markers by what a test needs, found rather than remembered (a pytest plugin; conftest.py
loads it).

CI's torch-free stage runs ``-m "not torch and not browser and not docker"`` where torch
cannot be imported, and fails on any skip; so a test that needs torch must carry ``torch``
and nobody has to keep a list of them:

- a test is marked ``torch`` when its module, the test function or any fixture it uses (at
  any depth) imports torch or torchvision, directly or through a module that does so when it
  is imported (``frameqc.export.network``, ``seed_reference``), or asks
  ``pytest.importorskip("torch")``;
- a test that still reaches ``import torch`` while it runs without the mark (through a helper
  that imports it late) fails and says so, wherever torch is installed;
- where torch cannot be imported and the ``-m`` expression leaves torch's tests out, the
  modules that import torch when they are imported are not even collected (importing them
  would report a skip);
- tests that use the ``browser`` fixture are marked ``browser``, those that use ``influx``
  ``influxd``. Docker and Dask modules carry their marks themselves.

The markers are declared in pyproject.toml and pytest runs with ``--strict-markers``.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.util
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

TORCH = frozenset({"torch", "torchvision"})
#: Fixtures whose use marks a test, by the fixture's name.
BY_FIXTURE = {"browser": "browser", "influx": "influxd"}
_OUR_PACKAGES = ("frameqc",)
#: Where our own modules live: beside this file, and the rootdir of the run.
ROOTS = [Path(__file__).resolve().parent]


def _imported(tree: ast.AST, when_imported: bool) -> Iterator[str]:
    """Module names ``tree`` imports (and asks ``importorskip`` for); with ``when_imported``
    only those its import runs, not those inside function bodies."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "importorskip"):
            yield node.args[0].value
        for child in ast.iter_child_nodes(node):
            if not (when_imported and isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)):
                todo.append(child)


def _ours(origin: str | None) -> bool:
    """Whether a module's file is this project's (frameqc or the tests), not a library's."""
    if not origin:
        return False
    path = Path(origin).resolve()
    return "site-packages" not in path.parts and any(path.is_relative_to(r) for r in ROOTS)


def _source_of(name: str) -> Path | None:
    """The file of one of our modules (frameqc's or a helper beside the tests), else None."""
    top, parent = name.split(".")[0], name.rpartition(".")[0]
    try:  # a top-level module is found without being imported
        if top not in _OUR_PACKAGES and not _ours(getattr(importlib.util.find_spec(top),
                                                          "origin", None)):
            return None
    except (ImportError, ValueError):
        return None
    try:  # finding a.b.c imports a.b: only ever a package (``from a.b import f`` names a.b.f)
        if parent and getattr(importlib.util.find_spec(parent), "submodule_search_locations",
                              None) is None:
            return None
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


_busy: set[str] = set()


@functools.cache
def module_needs_torch(name: str) -> bool:
    """Whether importing module ``name`` imports torch."""
    if name.split(".")[0] in TORCH:
        return True
    path = _source_of(name)
    if path is None or name in _busy:
        return False
    _busy.add(name)
    try:
        return _needs_torch(path.read_text(), when_imported=True)
    finally:
        _busy.discard(name)


def _needs_torch(source: str, when_imported: bool) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(module_needs_torch(name) for name in _imported(tree, when_imported))


@functools.cache
def file_needs_torch(path: Path) -> bool:
    """Whether importing the test module at ``path`` imports torch."""
    return _needs_torch(path.read_text(), when_imported=True)


@functools.cache
def _function_needs_torch(func) -> bool:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return False
    return _needs_torch(source, when_imported=False)


def _fixture_funcs(item: pytest.Item) -> Iterator:
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in (info.name2fixturedefs.get(name, ()) if info else ()):
            yield fixturedef.func


def needs_torch(item: pytest.Item) -> bool:
    """The test's module, function or fixtures (the whole closure) import torch."""
    if file_needs_torch(Path(item.path)):
        return True
    funcs = [getattr(item, "function", None), *_fixture_funcs(item)]
    return any(f is not None and _function_needs_torch(f) for f in funcs)


def torch_importable() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _selects_torch(config: pytest.Config) -> bool:
    """Whether ``-m`` can select a test marked torch (and nothing else)."""
    expr = config.getoption("markexpr", "")
    if not expr:
        return True
    try:
        from _pytest.mark.expression import Expression

        return bool(Expression.compile(expr).evaluate(lambda name, **kw: name == "torch"))
    except Exception:
        return True  # collect: a skip then says what is missing


def pytest_configure(config: pytest.Config) -> None:
    ROOTS.append(Path(config.rootpath).resolve())


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return True if _left_out(collection_path, config) else None


def _left_out(path: Path, config: pytest.Config) -> bool:
    """A torch module that this run leaves out: torch is missing and ``-m`` leaves it out."""
    return (path.suffix == ".py" and path.name.startswith("test_") and not torch_importable()
            and not _selects_torch(config) and file_needs_torch(path))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A module named on the command line is collected whatever ``pytest_ignore_collect``
    says: its skip (``importorskip("torch")``) is then no skip, just nothing collected."""
    report = yield
    if (report.skipped and isinstance(collector, pytest.Module)
            and _left_out(Path(collector.path), collector.config)):
        report.outcome, report.longrepr, report.result = "passed", None, []
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_torch(item):
            item.add_marker(pytest.mark.torch)
        for fixture, marker in BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))


class _TorchWatch:
    """Records who imports torch while a test not marked torch runs."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._real = builtins.__import__

    def __call__(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] in TORCH:
            self.seen.append(name)
        return self._real(name, globals, locals, fromlist, level)

    def __enter__(self) -> _TorchWatch:
        builtins.__import__ = self
        return self

    def __exit__(self, *exc) -> None:
        builtins.__import__ = self._real


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    return (yield from _watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    return (yield from _watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    return (yield from _watched(item))


def _watched(item: pytest.Item):
    if item.get_closest_marker("torch"):
        return (yield)
    with _TorchWatch() as watch:
        result = yield
    if watch.seen:
        raise pytest.fail.Exception(
            f"{item.nodeid} imports {watch.seen[0]} but is not marked torch: the torch-free "
            "stage would fail on it; mark it @pytest.mark.torch (or import torch where "
            "tests/marking.py can see it: in the test, a fixture or the module)",
            pytrace=False)
    return result
