"""``frameqc night`` and the evaluation report: pages made from real runs, read in a browser.

One synthetic night (a frame every 20 minutes from 20:00 to 04:00 UTC, a streak of
shutter failures from 02:00, one damaged file) is classified by a real ``frameqc watch
--once --log`` with a model whose head is fitted here on synthetic frames (torch-free,
as ``frameqc demo`` fits its own), so the shutter frames are alerts because the network
sees them, not because a test says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from frameqc.runtime.data.synthetic import make_frame, write_fits

from helpers import run_cli

SIZE = 454  # binned 2x2 by --bin auto to 227: a 2048 frame's look at a tenth of the cost
NIGHT = "2025-07-08"
START = datetime(2025, 7, 8, 20, 0)
STREAK = (datetime(2025, 7, 9, 2, 0), datetime(2025, 7, 9, 2, 40))
HEADER = {"FILTER1": "SDSS-R", "EXPTIME": 30.0}


def frame_file(path: Path, kind: str, seed: int, when: datetime | None) -> None:
    header = dict(HEADER, **({"DATE-OBS": when.isoformat(timespec="milliseconds")}
                             if when else {}))
    write_fits(path, make_frame(kind, SIZE, seed), **header)


@pytest.fixture(scope="session")
def shutter_model(tmp_path_factory) -> Path:
    """vgg16 with random convolutions and a head fitted on 24 synthetic frames (no torch)."""
    from frameqc.runtime.data.reader import FITS, Frame
    from frameqc.runtime.demo.builder import fit_softmax, head_from_linear
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.session import open_session
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    params, recipe = random_params(2, seed=0), AsinhRecipe()
    kinds = ["good", "shutter"] * 12
    x = np.stack([recipe.prepare(Frame(FITS, make_frame(k, SIZE, 90_000 + i))).tensor
                  for i, k in enumerate(kinds)])
    session = open_session(build_graph(params, "features").SerializeToString())
    feats = np.concatenate([session.run(None, {"image": x[i:i + 8]})[0]
                            for i in range(0, len(x), 8)])
    w, b = fit_softmax(feats.astype(np.float64), np.array([k == "shutter" for k in kinds],
                                                          int), 2)
    params.update(head_from_linear(w, b))
    card = ModelCard(labels=("OK", "Shutter"), alerts=("Shutter",), recipe=recipe.params(),
                     weights_sha256="5e1f" * 16, weights_name="fitted head (tests)")
    out = tmp_path_factory.mktemp("night_model") / "shutter.onnx"
    install_model(stage_model(build_graph(params, metadata=card.to_metadata()), out), out)
    return out


@pytest.fixture(scope="session")
def night(shutter_model, tmp_path_factory) -> dict:
    """The night's frames and the log a real ``frameqc watch --once`` wrote of them."""
    root = tmp_path_factory.mktemp("night")
    frames = root / "incoming"
    frames.mkdir()
    kinds = {}
    for i in range(25):
        when = START + timedelta(minutes=20 * i)
        kind = "shutter" if STREAK[0] <= when <= STREAK[1] else "good"
        name = f"h_e_{when:%Y%m%d_%H%M}.fits"
        frame_file(frames / name, kind, i, when)
        kinds[str(frames / name)] = kind
    (frames / "h_e_damaged.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    log = root / "watch.log"
    code, _, err = run_cli("watch", "--once", "--settle", "0", "--model", str(shutter_model),
                             "--state", str(root / "state"), "--log", str(log), str(frames))
    assert code == 1, err  # the damaged frame
    return {"root": root, "frames": frames, "log": log, "kinds": kinds,
            "records": [json.loads(line) for line in log.read_text().splitlines()]}


@pytest.fixture(scope="session")
def built(night, shutter_model) -> dict:
    out = night["root"] / "web"
    code, _, err = run_cli("night", str(night["log"]), "-o", str(out), "--night", NIGHT,
                           "--model", str(shutter_model), "--refresh", "120")
    assert code == 0, err
    return {"out": out, "page": (out / "index.html").read_text(), "err": err}


def flagged_rows(page: str) -> list[str]:
    block = page.split("<table class=flagged>", 1)[1].split("</table>", 1)[0]
    return block.split("<tr>")[2:]


def test_the_model_sees_the_shutter_streak(night):
    said = {r["path"]: r["label"] for r in night["records"] if "label" in r}
    assert len(said) == 25 and sum("error" in r for r in night["records"]) == 1
    assert {p for p, lab in said.items() if lab == "Shutter"} == {
        p for p, k in night["kinds"].items() if k == "shutter"}
    assert all(r["night"] == NIGHT for r in night["records"] if "label" in r)


def test_the_page_counts_the_night(built, night):
    page = built["page"]
    counts = Counter(r["label"] for r in night["records"] if "label" in r)
    assert counts == {"OK": 22, "Shutter": 3}
    table = page.split("<table class=counts>", 1)[1].split("</table>", 1)[0]
    assert "<td>OK</td><td>22</td>" in table and "<td>Shutter</td><td>3</td>" in table
    assert "25 frames, 3 alerts (12.0 %)" in page
    assert "<td>5e1f5e1f5e1f</td><td>fp32</td><td>25</td>" in page  # the model that decided
    assert '<meta http-equiv=refresh content="120">' in page
    assert "night of 2025-07-08: 25 frames, 3 alerts" in built["err"]
    assert "http:" not in page and "https:" not in page  # opens from disk, offline


def test_alerts_and_doubtful_frames_are_listed_with_what_the_network_saw(built, night):
    from PIL import Image

    rows = flagged_rows(built["page"])
    doubtful = [r for r in night["records"] if r.get("doubtful") and r["label"] != "Shutter"]
    assert len(rows) == 3 + len(doubtful)
    shutter = [r for r in rows if "class=alert>Shutter" in r]
    assert [re.search(r"(\d\d:\d\d):00</b>", r).group(1) for r in shutter] == [
        "02:00", "02:20", "02:40"]
    for row in rows:
        src = re.search(r'<img src="([^"]+)" class="seen', row).group(1)
        with Image.open(built["out"] / src) as img:
            assert img.size == (224, 224)
        assert "filter: SDSS-R" in row and "exposure: 30 s" in row
        assert 'href="file:///' in row


def test_thumbnails_are_made_once_and_a_moved_frame_keeps_its_row(night, shutter_model,
                                                                   tmp_path):
    from frameqc.runtime.lifecycle.night import build
    from frameqc.runtime.model.peek import read_card

    card = read_card(shutter_model)
    frames = tmp_path / "frames"
    shutil.copytree(night["frames"], frames)
    log = tmp_path / "watch.log"
    log.write_text(night["log"].read_text().replace(str(night["frames"]), str(frames)))
    out = tmp_path / "web"
    build([log], out, card, NIGHT)
    made = {p: p.stat().st_mtime_ns for p in (out / "seen").glob("*.png")}
    assert len(made) >= 3
    build([log], out, card, NIGHT)
    assert {p: p.stat().st_mtime_ns for p in (out / "seen").glob("*.png")} == made
    (frames / "h_e_20250709_0220.fits").rename(tmp_path / "elsewhere.fits")
    build([log], out, card, NIGHT)
    moved = [r for r in flagged_rows((out / "index.html").read_text())
             if "h_e_20250709_0220.fits" in r]
    assert len(moved) == 1 and "no image" in moved[0] and "02:20:00" in moved[0]


def test_torn_and_foreign_lines_are_counted_not_fatal(night, tmp_path):
    log = tmp_path / "torn.log"
    text = night["log"].read_text()
    log.write_text(text + "not json\n" + '{"some": "other tool"}\n' + text[:70])
    code, _, err = run_cli("night", str(log), "-o", str(tmp_path / "web"), "--night", NIGHT)
    assert code == 0, err
    page = (tmp_path / "web" / "index.html").read_text()
    assert "3 log lines were not records" in page
    assert "25 frames, 3 alerts" in page  # no model: every label but OK is an alert
    assert "refresh" not in page


def test_failed_frames_are_placed_by_when_they_were_logged(night, tmp_path):
    code, _, err = run_cli("night", str(night["log"]), "-o", str(tmp_path), "--last", "2d")
    assert code == 0, err
    page = (tmp_path / "index.html").read_text()
    assert "0 frames, 0 alerts (0.0 %), 0 doubtful, 1 failed" in page


def archive_rows(nights: dict[str, tuple[int, int]]) -> list[dict]:
    """Flat Parquet rows as ``archive`` writes them: per night (frames, alerts)."""
    from frameqc.runtime.output.record import flat

    rows = []
    for n, (frames, alerts) in nights.items():
        for i in range(frames):
            p = 0.9 if i < alerts else 0.1
            when = datetime.fromisoformat(n) + timedelta(hours=21, minutes=i)
            rows.append(flat({"path": f"/data/{n}/{i}.fits", "label": "Shutter" if p > .5
                              else "OK", "index": int(p < .5), "probability": max(p, 1 - p),
                              "probabilities": {"OK": 1 - p, "Shutter": p},
                              "doubtful": False, "date_obs": when.isoformat(),
                              "night": n, "model": "5e1f5e1f5e1f", "precision": "int8",
                              "seconds": 0.2}, ("OK", "Shutter")))
    return rows


def test_three_nights_from_an_archive_parquet_make_a_trend(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from frameqc.runtime.output.record import arrow_schema

    dataset = tmp_path / "archive"
    dataset.mkdir()
    nights = {"2025-07-06": (40, 4), "2025-07-07": (50, 10), "2025-07-08": (20, 10)}
    for k, (n, v) in enumerate(nights.items()):
        pq.write_table(pa.Table.from_pylist(archive_rows({n: v}), schema=arrow_schema(
            ("OK", "Shutter"))), dataset / f"part-{k}.parquet")
    code, _, err = run_cli("night", str(dataset), "-o", str(tmp_path / "web"))
    assert code == 0, err
    page = (tmp_path / "web" / "index.html").read_text()
    assert "night of 2025-07-08" in page and "20 frames, 10 alerts (50.0 %)" in page
    trend = page.split("<table class=trend>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>([\d-]+)</td><td>(\d+)</td><td>(\d+)</td><td>([\d.]+) %",
                      trend) == [("2025-07-08", "20", "10", "50.0"),
                                 ("2025-07-07", "50", "10", "20.0"),
                                 ("2025-07-06", "40", "4", "10.0")]
    from PIL import Image

    with Image.open(tmp_path / "web" / "night.png") as png:
        assert png.size == (1100, 1020)  # three panels: the trend is drawn


def screenshot(page: Path, shot: Path, size: tuple[int, int]) -> np.ndarray:
    """The page rendered by headless chromium, as the report test renders its page."""
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must render the pages in chromium (apt-get install chromium)")
        pytest.skip("no chromium here to render the page")
    subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={shot.parent / 'profile'}",
                    f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=120)
    return np.asarray(Image.open(shot).convert("L"))


@pytest.mark.browser
def test_the_night_page_renders_in_a_browser(built, tmp_path):
    img = screenshot(built["out"] / "index.html", tmp_path / "night.png", (1200, 2400))
    assert img.shape == (2400, 1200)
    assert img.std() > 20  # a page with tables, a plot and images, not a blank
    low = img[1400:]  # the alert rows' images, below the picture of the night
    assert (low < 100).mean() > 0.02


@pytest.mark.parametrize("argv,match", [
    (["--last", "12x"], "--last '12x': give a duration such as 12h"),
    (["--night", "8 July"], "not a date YYYY-MM-DD"),
    (["--model", __file__], "not a frameqc model"),
])
def test_bad_requests_are_one_line(night, tmp_path, argv, match):
    code, _, err = run_cli("night", str(night["log"]), "-o", str(tmp_path), *argv)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_a_missing_source_is_one_line(tmp_path):
    code, _, err = run_cli("night", str(tmp_path / "nowhere.log"), "-o", str(tmp_path / "w"))
    assert code == 2 and "nowhere.log: cannot read" in err and len(err.splitlines()) == 1


# -- the evaluation report, with the same machinery ----------------------------------------

@pytest.fixture(scope="session")
def compared(shutter_model, tmp_path_factory) -> dict:
    """evaluate --report of the fitted model against an unfitted one, on labelled frames."""
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    root = tmp_path_factory.mktemp("compare")
    for label, kind in (("OK", "good"), ("Shutter", "shutter")):
        (root / "data" / label).mkdir(parents=True)
        for i in range(4):
            frame_file(root / "data" / label / f"{kind}_{i}.fits", kind, 70_000 + i
                       + 100 * (kind == "shutter"), START + timedelta(minutes=i))
    unfitted = root / "unfitted.onnx"
    card = ModelCard(labels=("OK", "Shutter"), alerts=("Shutter",),
                     weights_sha256="0ff1ce" * 11, weights_name="random (tests)")
    install_model(stage_model(build_graph(random_params(2, seed=3),
                                          metadata=card.to_metadata()), unfitted), unfitted)
    report = root / "report"
    code, out, err = run_cli("evaluate", "-m", str(shutter_model), "-m", str(unfitted),
                             str(root / "data"), "--report", str(report), "--format", "json")
    assert code == 0, err
    return {"root": root, "report": report, "page": (report / "index.html").read_text(),
            "json": [json.loads(line) for line in out.splitlines()],
            "models": (shutter_model, unfitted)}


def said_by(model: Path, data: Path) -> dict[str, str]:
    code, out, err = run_cli("classify", "--model", str(model), "--format", "json", str(data))
    assert code == 0, err
    return {r["path"]: r for r in map(json.loads, out.splitlines())}


def test_report_shows_where_two_models_disagree(compared):
    a, b = (said_by(m, compared["root"] / "data") for m in compared["models"])
    differ = {p for p in a if a[p]["label"] != b[p]["label"]}
    assert differ  # the fitted model sees shutter failures the unfitted one does not
    page = compared["page"]
    head, _, rest = page.partition("<table class=disagree>")
    assert "Where shutter.onnx (5e1f5e1f5e1f, fp32) and unfitted.onnx (0ff1ce0ff1ce, fp32)" \
           f" disagree ({len(differ)})" in head
    rows = rest.split("</table>", 1)[0].split("<tr>")[2:]
    assert sorted(re.search(r"<span class=muted>([^<]+)</span>", r).group(1) for r in rows) \
        == sorted(differ)
    for row in rows:
        assert "DATE-OBS: 2025-07-08T20:0" in row and "filter: SDSS-R" in row
        src = re.search(r'src="([^"]+)"', row).group(1)
        assert (compared["report"] / src).is_file()


def test_report_sections_are_named_by_file_id_and_precision(compared):
    page = compared["page"]
    assert "<h2>shutter.onnx (5e1f5e1f5e1f, fp32)</h2>" in page
    assert "<h2>unfitted.onnx (0ff1ce0ff1ce, fp32)</h2>" in page
    ev = compared["json"][1]
    wrong = round(ev["n"] * (1 - ev["accuracy"]))
    mistakes = page.split("<h2>unfitted.onnx", 1)[1].split("<h2>", 1)[0]
    assert wrong and mistakes.count("<figure>") == mistakes.count("filter: SDSS-R") == wrong


def test_report_threshold_plot_covers_the_sweep_only(compared):
    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.lifecycle.evaluation import evaluate
    from frameqc.runtime.lifecycle.labelled import LabelledSet
    from frameqc.runtime.lifecycle.report import sweep_range

    ev = evaluate(Classifier.load(compared["models"][0], 1),
                  LabelledSet.load(compared["root"] / "data"))
    assert sweep_range([ev]) == (0.5, 1.0)
    assert (compared["report"] / "threshold.png").is_file()


def test_doubtful_is_counted_in_evaluate_as_classify_flags_it(compared):
    for model, ev in zip(compared["models"], compared["json"], strict=True):
        flags = [r["doubtful"] for r in said_by(model, compared["root"] / "data").values()]
        assert ev["doubtful"] == sum(flags)
    assert compared["json"][1]["doubtful"] == 8  # every unfitted decision is a coin toss
    assert "<th>doubtful</th>" in compared["page"]


@pytest.mark.browser
def test_the_report_renders_in_a_browser(compared, tmp_path):
    img = screenshot(compared["report"] / "index.html", tmp_path / "report.png", (1200, 2000))
    assert img.shape == (2000, 1200) and img.std() > 20
