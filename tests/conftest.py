"""Session fixtures: one real vgg16 state_dict, exported once to fp32 and int8 ONNX.

What the session shares lives in one folder (``session_dir``), removed when the session ends;
any file of a megabyte or more left in pytest's temporary folder (a model, weights, a
frame, an image) is removed then too, whatever the outcome, and a passed test's own folder
as soon as it passes (``tmp_path_retention_policy`` in pyproject.toml): a run leaves only
the small files of what failed."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from frameqc.runtime.data.synthetic import make_frame, write_fits

from helpers import LABELS, run_cli, spread_head

#: Marks each test by what it needs (torch, a browser, influxd): see tests/marking.py.
pytest_plugins = ["marking"]

#: Every model the tests build would leave a copy of its weights in the graph cache: it is
#: off for the suite (and its subprocesses), and on in tests/test_graphcache.py.
os.environ["FRAMEQC_GRAPH_CACHE"] = "off"
#: The suite runs every model on onnxruntime, as the base install does; tests/test_engines.py
#: measures and chooses engines (auto) and runs OpenVINO, in a cache folder of its own.
os.environ["FRAMEQC_ENGINE"] = "onnxruntime"


#: A file this large in pytest's temporary folder is removed when the session ends.
LARGE = 1 << 20


@pytest.fixture(scope="session", autouse=True)
def _remove_large_files(tmp_path_factory):
    """Torn down last: sweeps what the other fixtures and the tests left behind."""
    yield
    for root, _, files in os.walk(tmp_path_factory.getbasetemp()):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path) and os.lstat(path).st_size >= LARGE:
                    os.unlink(path)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    """The session's shared folder (models, frames), removed when the session ends."""
    path = tmp_path_factory.mktemp("session")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _folder(session_dir: Path, name: str) -> Path:
    (session_dir / name).mkdir()
    return session_dir / name



@pytest.fixture(scope="session")
def weights(session_dir) -> Path:
    """A real vgg16 + head state_dict (random init, spread head), saved with torch.save."""
    torch = pytest.importorskip("torch")
    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.network import build_vgg16
    from frameqc.runtime.model.recipes import AsinhRecipe

    torch.manual_seed(1234)
    net = build_vgg16(len(LABELS))
    spread_head(net, synthetic_tensors(AsinhRecipe(), 12, seed=100))
    path = _folder(session_dir, "weights") / "vgg16-random.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def exported(weights, session_dir) -> dict:
    """``frameqc export --int8`` of ``weights``: paths and the printed report."""
    out = _folder(session_dir, "model") / "model.onnx"
    code, stdout, stderr = run_cli("export", str(weights), "--labels", ",".join(LABELS),
                                   "--alert", "Shutter", "-o", str(out), "--int8")
    assert code == 0, stderr
    return {"fp32": out, "int8": out.with_name("model.int8.onnx"), "report": stdout,
            "stderr": stderr}


@pytest.fixture(scope="session")
def runtime_model(session_dir) -> dict:
    """A vgg16 model (fp32 and int8) made without torch, for tests that need no export.

    The graph comes from the runtime's own builder (random weights, torchvision's init),
    the int8 twin from the export's onnxruntime-only quantizer; torch is never imported,
    so the server and watch tests run where torch is not installed.
    """
    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.onnx_export import quantize_int8
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    card = ModelCard(labels=LABELS, alerts=("Shutter",), weights_sha256="0123456789ab" * 5,
                     weights_name="random vgg16 (tests)")
    out = _folder(session_dir, "runtime_model") / "model.onnx"
    install_model(stage_model(build_graph(random_params(len(LABELS), seed=3),
                                          metadata=card.to_metadata()), out), out)
    frames = synthetic_tensors(AsinhRecipe(), 6)
    int8, _ = quantize_int8(out, card, frames[:4], frames[4:], min_agreement=0.0)
    return {"fp32": out, "int8": int8}


@pytest.fixture(scope="session")
def fits_dir(session_dir) -> Path:
    """Real FITS files in the forms the runtime must read (see each name)."""
    d = _folder(session_dir, "frames")
    write_fits(d / "full_good.fits", make_frame("good", 2048, 1))
    write_fits(d / "full_shutter.fits", make_frame("shutter", 2048, 2))
    write_fits(d / "full_wobble.fits", make_frame("wobble", 2048, 3))
    write_fits(d / "prebinned_227.fits", make_frame("good", 227, 4))
    fits.PrimaryHDU(make_frame("shutter", 2048, 5).astype(np.float32) * 1.5 - 100).writeto(
        d / "float32.fits")
    nan = make_frame("wobble", 1024, 6).astype(np.float64)
    nan[100:300, 50:90] = np.nan
    nan[500, 500] = np.inf
    fits.PrimaryHDU(nan).writeto(d / "float64_nan.fits")
    fits.PrimaryHDU(make_frame("good", 2048, 7).astype(np.int32)).writeto(d / "int32.fits")
    raw = (d / "full_good.fits").read_bytes()
    (d / "gzipped.fits.gz").write_bytes(gzip.compress(raw))
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(make_frame("wobble", 2048, 8))]).writeto(
        d / "fpacked.fits.fz")
    write_fits(d / "nonsquare.fits", make_frame("shutter", (1536, 2048), 9))
    return d


@pytest.fixture()
def good(tmp_path, fits_dir) -> Path:
    shutil.copy(fits_dir / "full_good.fits", tmp_path / "a_good.fits")
    return tmp_path / "a_good.fits"


@pytest.fixture()
def broken_dir(tmp_path, fits_dir) -> Path:
    """Good frames mixed with broken ones, each broken in a different way."""
    for name in ("full_good.fits", "prebinned_227.fits"):
        shutil.copy(fits_dir / name, tmp_path / name)
    raw = (fits_dir / "full_good.fits").read_bytes()
    (tmp_path / "b_truncated.fits").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "c_empty.fits").write_bytes(b"")
    (tmp_path / "d_text.fits").write_text("not a frame\n")
    write_fits(tmp_path / "e_small.fits", make_frame("good", 100, 1))
    write_fits(tmp_path / "f_flat.fits", np.full((300, 300), 1000, np.uint16))
    fits.PrimaryHDU(np.full((300, 300), np.nan, np.float32)).writeto(tmp_path / "g_allnan.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="a", format="E", array=np.zeros(3))])]).writeto(tmp_path / "h_table.fits")
    from PIL import Image

    Image.fromarray(np.zeros((224, 224, 3), np.uint8)).save(tmp_path / "i_image.png")
    return tmp_path
