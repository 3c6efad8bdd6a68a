"""The graph cache: a later process loads the saved optimised graph and decides identically."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from frameqc.runtime.model import graphcache
from frameqc.runtime.model.session import Model


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEQC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FRAMEQC_GRAPH_CACHE", "on")
    return tmp_path / "cache" / "graphs"


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(7).random((3, 3, 224, 224), dtype=np.float32)


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_cached_graph_decides_bit_for_bit_as_a_fresh_one(cache, runtime_model, batch,
                                                           monkeypatch, precision):
    monkeypatch.setenv("FRAMEQC_GRAPH_CACHE", "off")
    fresh = Model(runtime_model[precision], threads=1)
    assert fresh.graph == "built" and not _entries(cache)
    want = fresh.predict(batch)
    monkeypatch.setenv("FRAMEQC_GRAPH_CACHE", "on")
    first = Model(runtime_model[precision], threads=1)
    assert first.graph == "built+saved" and len(_entries(cache)) == 1
    later = Model(runtime_model[precision], threads=1)
    assert later.graph == "cached"
    np.testing.assert_array_equal(first.predict(batch), want)
    np.testing.assert_array_equal(later.predict(batch), want)


def test_damaged_and_foreign_entries_are_rebuilt(cache, runtime_model, batch):
    want = Model(runtime_model["int8"], threads=1).predict(batch)
    entry = cache / _entries(cache)[0]
    with open(entry / graphcache.WEIGHTS, "r+b") as fh:  # a crash mid-copy: truncated
        fh.truncate(1000)
    again = Model(runtime_model["int8"], threads=1)
    assert again.graph == "built+saved"
    np.testing.assert_array_equal(again.predict(batch), want)
    manifest = json.loads((entry / graphcache.MANIFEST).read_text())
    manifest["key"]["cpu"] = "another machine"
    (entry / graphcache.MANIFEST).write_text(json.dumps(manifest))
    assert Model(runtime_model["int8"], threads=1).graph == "built+saved"
    assert Model(runtime_model["int8"], threads=1).graph == "cached"


def test_garbage_in_an_entry_is_never_loaded(cache, runtime_model, batch):
    want = Model(runtime_model["int8"], threads=1).predict(batch)
    entry = cache / _entries(cache)[0]
    graph = entry / graphcache.GRAPH
    graph.write_bytes(b"\0" * graph.stat().st_size)  # right size, wrong bytes
    again = Model(runtime_model["int8"], threads=1)
    assert again.graph == "built+saved"
    np.testing.assert_array_equal(again.predict(batch), want)


def test_off_and_unwritable_caches_still_classify(cache, runtime_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEQC_GRAPH_CACHE", "off")
    assert Model(runtime_model["int8"], threads=1).graph == "built"
    assert not cache.exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FRAMEQC_GRAPH_CACHE", "on")
    monkeypatch.setenv("FRAMEQC_CACHE", str(blocker))
    assert Model(runtime_model["int8"], threads=1).graph == "built"


def test_a_new_model_file_gets_a_new_entry(cache, runtime_model, tmp_path):
    Model(runtime_model["int8"], threads=1)
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(runtime_model["int8"].read_bytes() + b"")
    for data in runtime_model["int8"].parent.glob(runtime_model["int8"].name + ".*.data"):
        shutil.copy(data, tmp_path / data.name)  # a hard link would make onnx refuse the original
    os.utime(copy, ns=(1, 1))  # same bytes, another file: its own entry
    assert Model(copy, threads=1).graph == "built+saved"
    assert len(_entries(cache)) == 2


def test_a_cold_one_shot_uses_the_cache(cache, runtime_model, fits_dir):
    frame = str(sorted(fits_dir.glob("*.fits"))[0])
    argv = [sys.executable, "-m", "frameqc.runtime.cli", "classify", "--model",
            str(runtime_model["int8"]), "--format", "json", frame]
    env = {**os.environ}
    runs = [subprocess.run(argv, capture_output=True, text=True, env=env) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert len(_entries(cache)) == 1
    assert json.loads(runs[0].stdout) == {**json.loads(runs[1].stdout),
                                          "seconds": json.loads(runs[0].stdout)["seconds"]}
