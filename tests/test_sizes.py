"""Issue 28: the mirror-wobble classifier at any image size, and upstream's reply text.

The first half needs no torch (the runtime's own graph of any size, the reply and text
rules, refusals, grouping); the second exports a real vgg16 at any size and checks it,
``classify`` and ``serve --tcp`` against torch.
"""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frameqc.runtime.data.reader import JPEG, PNG, Frame
from frameqc.runtime.data.synthetic import make_frame
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.decision import decide
from frameqc.runtime.model.recipes import RGBRecipe, asinh_stretch, to_uint16
from frameqc.runtime.output.record import tcp_reply, text_line

from helpers import frameqc, run_cli
from serving import Server, frame_payload, upstream

WOBBLE = ("Wobble", "OK")
#: (height, width) of the mixed-size images: 7 divides the feature map, overlapping
#: windows, not square, small, and the smallest the network takes.
MIXED = [(224, 224), (256, 256), (400, 300), (96, 160), (32, 32)]


def star_image(h: int, w: int, seed: int, fmt: str = "JPEG") -> bytes:
    """A synthetic frame stretched to grey, as ``fits2grey`` would make it, encoded."""
    plane = asinh_stretch(to_uint16(make_frame(("good", "wobble")[seed % 2], (h, w), seed)))
    buf = io.BytesIO()
    Image.fromarray(np.repeat(plane[:, :, None], 3, axis=2)).save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder: Path, sizes=MIXED) -> list[Path]:
    """The images of ``sizes``, JPEG and PNG in turn, named in the order given."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (h, w) in enumerate(sizes):
        fmt = ("JPEG", "PNG")[i % 2]
        path = folder / f"{i:02d}_{w}x{h}.{fmt.lower()}"
        path.write_bytes(star_image(h, w, i, fmt))
        out.append(path)
    return out


def upstream_reply(p: np.ndarray, labels=WOBBLE, alerts=("Wobble",), threshold=0.6) -> str:
    """The upstream server's lines: decision + " " + str(numpy.round(p, 3)), p = top class."""
    top = int(np.argmax(p))
    label = labels[top]
    if label in alerts and p[top] < threshold:
        label = "OK"
    return label + " " + str(np.round(np.float32(p[top]), 3))


# -- the reply and the text line, by upstream's rules -----------------------------------

@pytest.mark.parametrize("p,want", [
    ((0.986, 0.014), "Wobble 0.986"),  # an alert above its threshold
    ((0.552, 0.448), "OK 0.552"),  # the alert on top but under 0.6: OK, with ITS probability
    ((0.12, 0.88), "OK 0.88"),  # a non-alert
    ((0.0, 1.0), "OK 1.0"),  # p = 1.0
    ((0.5, 0.5), "OK 0.5"),  # p = 0.5
    ((0.6, 0.4), "Wobble 0.6"),
])
def test_tcp_reply_is_upstreams(p, want):
    p = np.array(p, np.float32)
    d = decide(p, WOBBLE, ("Wobble",), 0.6)
    rec = {"label": d.label, "probability": d.probability, "probabilities": d.probabilities}
    assert tcp_reply(rec) == want == upstream_reply(p)
    if want == "OK 0.552":  # the record keeps the honest label and its own probability
        assert rec["probability"] == pytest.approx(0.448)


def test_tcp_reply_matches_numpy_on_every_float32():
    rng = np.random.default_rng(5)
    for a in rng.random(20000).astype(np.float32):
        p = np.array([a, np.float32(1) - a], np.float32)
        d = decide(p, WOBBLE, ("Wobble",), 0.6)
        assert tcp_reply({"label": d.label, "probabilities": d.probabilities}) == \
            upstream_reply(p)


def test_text_line_is_upstreams_print():
    """print(int(index), numpy.round(float(p), 3), label, path), over many float32 p."""
    rng = np.random.default_rng(7)
    ps = np.concatenate([rng.random(50000).astype(np.float32),
                         np.float32((np.arange(2001) + 0.5) / 2000), [1.0, 0.5, 0.0]])
    for p in ps.astype(np.float32):
        out = io.StringIO()
        print(1, np.round(float(p), 3), "OK", "/data/x y.fits", file=out)
        rec = {"index": 1, "probability": float(p), "label": "OK", "path": "/data/x y.fits"}
        assert text_line(rec) + "\n" == out.getvalue()
    assert text_line({"index": 1, "probability": 1.0, "label": "OK", "path": "p"}) == "1 1.0 OK p"


# -- refusals, one line each --------------------------------------------------------------

def test_rgb_sizes_and_refusals(monkeypatch):
    any_size = RGBRecipe()
    for h, w in [*MIXED, (1000, 1000), (33, 4000)]:
        t = any_size.prepare(Frame(PNG, np.zeros((h, w, 3), np.uint8))).tensor
        assert t.shape == (3, h, w)
    with pytest.raises(FrameError, match=r"^image is 20x20; the model needs at least 32x32$"):
        any_size.prepare(Frame(JPEG, np.zeros((20, 20, 3), np.uint8)))
    with pytest.raises(FrameError, match="image is 31x500"):
        any_size.prepare(Frame(JPEG, np.zeros((500, 31, 3), np.uint8)))
    monkeypatch.setenv("FRAMEQC_MAX_IMAGE_PIXELS", str(300 * 300))
    with pytest.raises(FrameError, match=r"image of 301x300 pixels is over the limit of "
                                         r"90000 pixels .*FRAMEQC_MAX_IMAGE_PIXELS"):
        any_size.prepare(Frame(PNG, np.zeros((300, 301, 3), np.uint8)))
    monkeypatch.setenv("FRAMEQC_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UsageError, match="FRAMEQC_MAX_IMAGE_PIXELS must be"):
        any_size.prepare(Frame(PNG, np.zeros((64, 64, 3), np.uint8)))
    # a model exported before: its graph takes 224x224 only, and says so
    with pytest.raises(FrameError, match="image is 512x512; the model takes 224x224"):
        RGBRecipe(size=224).prepare(Frame(PNG, np.zeros((512, 512, 3), np.uint8)))


def test_card_says_what_sizes_it_takes():
    card = ModelCard(labels=WOBBLE, recipe={"name": "rgb"}, input_sizes="any")
    assert "input_sizes" in card.describe() and "any from 32x32 up" in card.describe()
    assert "224x224 only" in ModelCard(labels=WOBBLE).describe()
    with pytest.raises(UsageError, match="'asinh' recipe prepares one size"):
        ModelCard(labels=WOBBLE, input_sizes="any")
    with pytest.raises(UsageError, match="input_sizes must be one of fixed, any"):
        ModelCard(labels=WOBBLE, recipe={"name": "rgb"}, input_sizes="big")


def test_size_groups_keep_order_and_bound_pixels():
    from frameqc.runtime.engine.pipeline import BATCH_PIXELS, Result, size_groups
    from frameqc.runtime.model.recipes import Prepared

    shapes = [(224, 224), (512, 512), (224, 224), (32, 48), (512, 512), (224, 224)] * 4
    ready = [Result(str(i), prepared=Prepared(np.zeros((3, h, w), np.float32)))
             for i, (h, w) in enumerate(shapes)]
    groups = size_groups(ready)
    assert sorted(r.path for g in groups for r in g) == sorted(r.path for r in ready)
    for g in groups:
        assert len({r.prepared.tensor.shape for r in g}) == 1
        assert [int(r.path) for r in g] == sorted(int(r.path) for r in g)
        h, w = g[0].prepared.tensor.shape[1:]
        assert len(g) == 1 or len(g) * h * w <= BATCH_PIXELS
    assert max(len(g) for g in groups if g[0].prepared.tensor.shape[1] == 512) == 1


# -- the runtime's own graph of any size (no torch) ----------------------------------------

@pytest.fixture(scope="module")
def any_size_model(tmp_path_factory) -> Path:
    """The runtime builder's vgg16 for any size, random weights, the wobble card."""
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    card = ModelCard(labels=WOBBLE, alerts=("Wobble",), threshold=0.6, recipe={"name": "rgb"},
                     input_sizes="any", weights_sha256="0123456789ab" * 5)
    out = tmp_path_factory.mktemp("any_size") / "any.onnx"
    install_model(stage_model(build_graph(random_params(2, seed=3), size=None,
                                          metadata=card.to_metadata()), out), out)
    return out


def test_classify_mixed_sizes_in_order_with_refusals(any_size_model, tmp_path):
    images = write_images(tmp_path / "in")
    small = tmp_path / "in" / "50_small.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(small)
    broken = tmp_path / "in" / "51_cut.jpg"
    broken.write_bytes(star_image(512, 512, 9)[:5000])
    paths = [str(p) for p in images[:2]] + [str(small), str(broken)] + \
        [str(p) for p in images[2:]]
    r = frameqc("classify", "--model", str(any_size_model), "-f", "json", *paths)
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == paths
    bad = {row["path"]: row["error"] for row in rows if "error" in row}
    assert bad == {str(small): "image is 20x20; the model needs at least 32x32",
                   str(broken): bad[str(broken)]}
    assert bad[str(broken)].startswith("damaged image file")
    assert r.stderr.count("\n") == 2 and "Traceback" not in r.stderr
    r = frameqc("info", str(any_size_model))
    assert "input_sizes" in r.stdout and "any from 32x32 up" in r.stdout


def test_runtime_graph_pools_as_torchvision_at_any_size():
    """The demo's and the torch-free fixtures' builder, against torchvision's module."""
    torch = pytest.importorskip("torch")
    import onnx  # noqa: F401

    from frameqc.export.network import Probabilities, build_vgg16
    from frameqc.runtime.model.session import open_session
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    params = random_params(2, seed=4)
    params["classifier.6.3.weight"] *= 400  # probabilities that spread: parity is not trivial
    net = build_vgg16(2)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    sess = open_session(build_graph(params, size=None).SerializeToString())
    worst, spread = 0.0, []
    for h, w in [(224, 224), (256, 256), (400, 300), (32, 32), (1000, 1000), (1100, 1100)]:
        x = np.random.default_rng(h + w).random((1, 3, h, w), np.float32)
        with torch.no_grad():
            ref = Probabilities(net).eval()(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(sess.run(None, {"image": x})[0] - ref).max()))
        spread.append(ref[0, 0])
    assert np.ptp(spread) > 0.05, spread
    assert worst <= 1e-4


# -- a real export at any size, against torch -----------------------------------------------

@pytest.fixture(scope="module")
def wobble_weights(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.network import build_vgg16

    from helpers import spread_head

    torch.manual_seed(28)
    net = build_vgg16(2)
    spread_head(net, synthetic_tensors(RGBRecipe(size=224), 12, seed=100))
    path = tmp_path_factory.mktemp("wobble_weights") / "wobble.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def wobble_export(wobble_weights, tmp_path_factory) -> dict:
    """``frameqc export --recipe rgb --int8`` calibrated on the operator's JPEGs/PNGs."""
    d = tmp_path_factory.mktemp("wobble_export")
    write_images(d / "cal", [(224, 224), (256, 256), (400, 300), (288, 352)] * 4)
    out = d / "wobble.onnx"
    code, stdout, stderr = run_cli("export", str(wobble_weights), "--labels", "Wobble,OK",
                                   "--alert", "Wobble", "--threshold", "0.6", "--recipe", "rgb",
                                   "--calibration", str(d / "cal"), "-o", str(out), "--int8",
                                   "--min-agreement", "0.01")
    assert code == 0, stderr
    return {"fp32": out, "int8": out.with_name("wobble.int8.onnx"), "report": stdout}


def torch_probabilities(weights: Path, paths: list[Path]) -> np.ndarray:
    """The upstream server's computation: JPEG -> RGB -> /255 -> CHW -> vgg16, own size."""
    import torch

    from frameqc.export.network import Probabilities, build_vgg16

    net = build_vgg16(2)
    net.load_state_dict(torch.load(weights, weights_only=True))
    module = Probabilities(net).eval()
    out = []
    with torch.no_grad():
        for p in paths:
            img = np.asarray(Image.open(p).convert("RGB"), np.float32) / 255
            out.append(module(torch.from_numpy(img.transpose(2, 0, 1).copy())[None])[0].numpy())
    return np.array(out)


def test_export_checks_every_size_against_torch(wobble_export):
    from frameqc.runtime.model.session import Model

    report = wobble_export["report"]
    for size in ("224x224", "256x256", "300x400", "1000x1000", "1100x1100"):
        m = re.search(rf"onnx vs torch, random {size}\s+n=1\s+max\|dp\|=(\S+)", report)
        assert m, report
        assert float(m.group(1)) <= 1e-4
    fp32, int8 = Model(wobble_export["fp32"]).card, Model(wobble_export["int8"]).card
    assert fp32.input_sizes == int8.input_sizes == "any"
    assert fp32.sizes_checked["fp32_vs_torch"][:5] == ["224x224", "256x256", "300x400",
                                                       "1000x1000", "1100x1100"]
    assert set(int8.sizes_checked["int8_gate"]) == {"224x224", "256x256", "300x400",
                                                    "352x288"}
    assert "int8_gate" not in fp32.sizes_checked


def test_export_fails_when_the_pooling_disagrees(wobble_weights, tmp_path, monkeypatch):
    """Windows that do not overlap (floor, floor) agree at 224 only: the export refuses."""
    import torch

    from frameqc.export import any_size

    def wrong(length, like):
        i = torch.arange(any_size.CELLS)
        start = torch.div(i * length, any_size.CELLS, rounding_mode="floor")
        end = torch.div((i + 1) * length, any_size.CELLS, rounding_mode="floor")
        pos = torch.arange(length)
        inside = (pos[None] >= start[:, None]) & (pos[None] < end[:, None])
        return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]

    monkeypatch.setattr(any_size, "pooling_matrix", wrong)
    out = tmp_path / "bad.onnx"
    code, _, err = run_cli("export", str(wobble_weights), "--labels", "Wobble,OK",
                           "--recipe", "rgb", "-o", str(out))
    assert code == 2 and "ONNX and torch disagree" in err and "no model written" in err
    assert list(tmp_path.iterdir()) == []


def test_classify_mixed_sizes_matches_torch(wobble_export, wobble_weights, tmp_path):
    images = write_images(tmp_path / "in", [*MIXED, (512, 512), (1000, 1000)])
    ref = torch_probabilities(wobble_weights, images)
    assert np.ptp(ref[:, 0]) > 0.05, "probabilities do not spread: parity would be trivial"
    for precision, atol in (("fp32", 1e-4), ("int8", 0.25)):
        code, out, err = run_cli("classify", "--model", str(wobble_export[precision]), "-f",
                                 "json", *map(str, images))
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["path"] for r in rows] == list(map(str, images))
        got = np.array([[r["probabilities"][k] for k in WOBBLE] for r in rows])
        np.testing.assert_allclose(got, ref, atol=atol, rtol=0)
    code, out, _ = run_cli("classify", "--model", str(wobble_export["fp32"]), str(images[0]))
    _index, p, _label, path = out.split()
    assert p == str(np.round(float(ref[0].max()), 3)) and path == str(images[0])


def test_serve_tcp_mixed_sizes_as_upstream(wobble_export, wobble_weights, tmp_path):
    images = write_images(tmp_path / "in", [*MIXED, (512, 512)])
    ref = torch_probabilities(wobble_weights, images)
    _code, out, _ = run_cli("classify", "--model", str(wobble_export["fp32"]), "-f", "json",
                           *map(str, images))
    ours = np.array([[json.loads(line)["probabilities"][k] for k in WOBBLE]
                     for line in out.splitlines()], np.float32)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    with Server(wobble_export["fp32"], tmp_path / "w.sock", "--tcp", "127.0.0.1:0") as server:
        for path, p in zip(images, ours, strict=True):
            reply = upstream(server.tcp_port, frame_payload(path.read_bytes())).decode()
            assert reply == upstream_reply(p), path.name
        small = io.BytesIO()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(small, format="PNG")
        assert upstream(server.tcp_port, frame_payload(small.getvalue())) == \
            b"ERROR image is 20x20; the model needs at least 32x32"
        cut = upstream(server.tcp_port, frame_payload(star_image(300, 300, 1)[:3000]))
        assert cut.startswith(b"ERROR damaged image file") and b"\n" not in cut
        again = upstream(server.tcp_port, frame_payload(images[0].read_bytes())).decode()
        assert again == upstream_reply(ours[0])
        assert server.internal_errors() == []
        assert server.stop() == 0
