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
import sys
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
FRAMEQC = [sys.executable, "-m", "frameqc.runtime.cli"]


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
    code, said, err = run_cli("night", str(night["log"]), "-o", str(out), "--night", NIGHT,
                              "--model", str(shutter_model), "--refresh", "120")
    assert code == 0, err
    return {"out": out, "page": (out / "index.html").read_text(), "said": said, "err": err}


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
    assert "night of 2025-07-08: 25 frames, 3 alerts" in built["said"] and built["err"] == ""
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


# -- hostile nights (issue 27: 1, 2, 4, 5, 19; issue 30: 5, 6) ------------------------------

ABSURD = {"year1.fits": "0001-01-01T00:00:00", "year9999.fits": "9999-12-31T23:59:59",
          "future.fits": "2999-01-01T00:00:00"}


@pytest.fixture
def absurd_frames(tmp_path) -> Path:
    """Real FITS files whose DATE-OBS parses but cannot be a night, beside a normal one."""
    frames = tmp_path / "incoming"
    frames.mkdir()
    for i, (name, date) in enumerate(ABSURD.items()):
        write_fits(frames / name, make_frame("shutter", SIZE, 500 + i), **{"DATE-OBS": date})
    frame_file(frames / "normal.fits", "good", 600, START + timedelta(hours=1))
    return frames


def test_night_of_absurd_dates_is_unknown():
    from frameqc.runtime.output.record import night_of

    for date in [*ABSURD.values(), "0001-01-01", "0001-01-01T00:00:00Z", "1066-10-14T09:00"]:
        assert night_of(date) is None, date
    assert night_of("2025-07-09T02:00:00.123") == "2025-07-08"
    assert night_of("2025-07-09") == "2025-07-09"


def test_an_absurd_date_obs_gives_a_record_in_classify_watch_and_night(
        absurd_frames, shutter_model, tmp_path):
    code, out, err = run_cli("classify", "--model", str(shutter_model), "--format", "json",
                             str(absurd_frames))
    assert code == 0, err
    said = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert set(said) == {*ABSURD, "normal.fits"}
    for name, date in ABSURD.items():
        assert said[name]["date_obs"] == date and said[name]["night"] is None
    assert said["normal.fits"]["night"] == NIGHT
    log = tmp_path / "watch.log"
    for _ in range(2):  # the second run finds nothing new: it does not die on the same frame
        code, _, err = run_cli("watch", "--once", "--settle", "0", "--model",
                               str(shutter_model), "--state", str(tmp_path / "state"),
                               "--log", str(log), str(absurd_frames))
        assert code == 0, err
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in logged) == sorted(said)
    code, out, err = run_cli("night", str(log), "-o", str(tmp_path / "web"))
    assert code == 0 and err == "", err
    assert "3 frames, 3 alerts" in out  # tonight's, placed by when they were logged
    page = (tmp_path / "web" / "index.html").read_text()
    assert "3 frames placed by the time they were logged" in page
    code, out, err = run_cli("night", str(log), "-o", str(tmp_path / "web"), "--night", NIGHT)
    assert code == 0 and f"night of {NIGHT}: 1 frames, 0 alerts" in out, err


def record_line(path: str, p: float = 0.9, **over) -> str:
    """A log line as watch writes it, for a frame of the night at 22:00."""
    rec = {"time": "2025-07-08T22:00:05+0000", "path": path,
           "label": "Shutter" if p >= 0.5 else "OK", "index": int(p < 0.5),
           "probability": max(p, 1 - p), "probabilities": {"OK": 1 - p, "Shutter": p},
           "doubtful": False, "date_obs": "2025-07-08T22:00:00", "night": NIGHT,
           "model": "5e1f5e1f5e1f", "precision": "fp32", "seconds": 0.2}
    rec.update(over)
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


def test_damaged_and_foreign_lines_are_skipped_and_counted(tmp_path):
    good = [record_line(f"/data/ok{i}.fits", 0.1) for i in range(3)]
    bad = ["[" * 100_000 + "]" * 100_000,  # nested past the parser's recursion
           '{"path": ' * 50_000 + "1" + "}" * 50_000,
           record_line("/data/a.fits", probabilities={"OK": "0.1", "Shutter": "0.9"}),
           record_line("/data/b.fits", label=["Shutter"]),
           record_line("/data/c.fits", doubtful="yes"),
           record_line("/data/d.fits", index=1.5),
           record_line("/data/e.fits", probability=True),
           record_line("/data/f.fits", model=7),
           record_line("/data/g.fits", date_obs=["2025"]),
           record_line("/data/h.fits", probabilities=...),
           record_line(7),
           json.dumps({"path": "/data/i.fits", "error": ["no"]}),
           record_line("/data/j.fits", probabilities={"Shutter": float("nan"), "OK": 0.1}),
           record_line("/data/k.fits", error="x" * 2_000_000),  # longer than a record
           "[1, 2]", "null", '"a string"', "\x00\x01", ""]
    odd = [record_line("/data/with\x00nul.fits", 0.95),  # names no file can have
           record_line("/data/\ud800.fits", 0.95)]
    log = tmp_path / "damaged.log"
    log.write_text("\n".join([*good, *bad, *odd]) + "\n")
    code, out, err = run_cli("night", str(log), "-o", str(tmp_path / "web"))
    assert code == 0, err
    assert f"{len(bad)} log lines were not records and were skipped" in err
    assert "5 frames, 2 alerts" in out
    page = (tmp_path / "web" / "index.html").read_text()
    assert f"{len(bad)} log lines were not records" in page
    assert "/data/with\\x00nul.fits" in page and "\x00" not in page
    assert "/data/\\ud800.fits" in page


def test_an_absurd_logged_time_is_no_crash(tmp_path):
    """A failed frame is placed by its log time; one no clock can hold is placed nowhere."""
    log = tmp_path / "odd-time.log"
    log.write_text("".join(json.dumps({"time": t, "path": f"/data/{i}.fits", "error": "x"})
                           + "\n" for i, t in enumerate(("0001-01-01T00:30:00+01:00",
                                                          "9999-12-31T23:30:00-01:00")))
                   + record_line("/data/ok.fits", 0.1) + "\n")
    code, out, err = run_cli("night", str(log), "-o", str(tmp_path / "web"))
    assert code == 0 and err == "" and out.startswith("frameqc night: "), err
    assert (tmp_path / "web" / "index.html").exists()


def test_a_damaged_thumbnail_cache_entry_is_made_again(night, shutter_model, tmp_path):
    out = tmp_path / "web"
    args = ("night", str(night["log"]), "-o", str(out), "--night", NIGHT, "--model",
            str(shutter_model))
    assert run_cli(*args)[0] == 0
    entries = sorted((out / "seen").glob("*.json"))
    assert len(entries) >= 3
    shapes = ["[1, 2]", '{"image": true}', '{"image": true, "facts": "DATE-OBS"}',
              '{"image": "x", "facts": {"filter": 3}}', "{", '"text"', "[" * 100_000]
    for entry, shape in zip(entries, shapes * len(entries), strict=False):
        entry.write_text(shape)
    code, _, err = run_cli(*args)
    assert code == 0, err
    for entry in entries:
        known = json.loads(entry.read_text())
        assert isinstance(known["image"], bool) and isinstance(known["facts"], dict)
        assert known["image"] and (out / "seen" / entry.with_suffix(".png").name).is_file()
    assert "filter: SDSS-R" in (out / "index.html").read_text()


def test_foreign_parquet_rows_are_skipped_and_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from frameqc.runtime.output.record import arrow_schema

    dataset = tmp_path / "archive"
    dataset.mkdir()
    pq.write_table(pa.table({"label": ["OK", "Shutter"], "p_OK": [0.9, 0.1]}),
                   dataset / "a-foreign.parquet")  # first: its schema is not the dataset's
    pq.write_table(pa.table({"path": [b"/data/x\xff.fits", b"/data/y.fits"],
                             "label": ["Shutter", "OK"], "p_Shutter": [0.9, 0.2],
                             "p_OK": [0.1, 0.8], "night": [NIGHT, NIGHT]}),
                   dataset / "b-bytes.parquet")
    pq.write_table(pa.table({"path": pa.array([b"/data/z\xff.fits"]).view(pa.string()),
                             "label": ["Shutter"], "p_Shutter": [0.8], "p_OK": [0.2],
                             "night": [NIGHT]}), dataset / "b-not-utf8.parquet")
    pq.write_table(pa.Table.from_pylist(archive_rows({NIGHT: (5, 2)}), schema=arrow_schema(
        ("OK", "Shutter"))), dataset / "c-archive.parquet")
    whole = (dataset / "c-archive.parquet").read_bytes()
    (dataset / "d-cut.parquet").write_bytes(whole[:len(whole) // 2])  # cut by a crash
    code, out, err = run_cli("night", str(dataset), "-o", str(tmp_path / "web"))
    assert code == 0, err
    assert "8 frames, 4 alerts" in out
    assert "2 Parquet rows were not records and were skipped; 1 Parquet files could not " \
           "be read and were skipped" in err
    code, _, err = run_cli("night", str(dataset / "d-cut.parquet"), "-o", str(tmp_path / "w"))
    assert code == 2 and "d-cut.parquet: cannot read as Parquet" in err  # the one asked for
    page = (tmp_path / "web" / "index.html").read_text()
    assert "/data/x\\xff.fits" in page and "/data/z\\xff.fits" in page


def test_a_file_name_that_is_not_utf8_is_shown_escaped(night, shutter_model, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    name = os.fsdecode(b"h_e_\xff\xfe.fits")
    shutil.copy(next(p for p, k in night["kinds"].items() if k == "shutter"), frames / name)
    path = str(frames / name)
    log = tmp_path / "watch.log"
    with log.open("wb") as fh:  # as frameqc writes it (JSON escapes), and as raw bytes
        fh.write(record_line(path, 0.95).encode() + b"\n")
        fh.write(record_line(str(frames / "RAW"), 0.95).encode().replace(
            b"RAW", b"raw\xff.fits") + b"\n")
    code, _, err = run_cli("night", str(log), "-o", str(tmp_path / "web"), "--model",
                             str(shutter_model))
    assert code == 0 and err == "", err
    page = (tmp_path / "web" / "index.html").read_bytes().decode("utf-8")  # valid UTF-8
    assert "h_e_\\xff\\xfe.fits" in page and "raw\\xff.fits" in page
    assert "h_e_%FF%FE.fits" in page  # the link names the file on disk
    row = next(r for r in flagged_rows(page) if "h_e_" in r)
    assert "filter: SDSS-R" in row and "no image" not in row  # the file was found and read


def test_a_name_frameqc_logged_escaped_finds_its_frame(night, shutter_model, tmp_path):
    """frameqc writes such a name ``x\\xfd.fits`` in its --log; night opens the real file."""
    from frameqc.runtime.util.text import readable

    frames = tmp_path / "frames"
    frames.mkdir()
    path = str(frames / os.fsdecode(b"h_e_\xfd.fits"))
    shutil.copy(next(p for p, k in night["kinds"].items() if k == "shutter"), path)
    log = tmp_path / "watch.log"
    log.write_text(record_line(readable(path), 0.95) + "\n")
    assert "h_e_\\\\xfd.fits" in log.read_text()  # as JSON writes a backslash
    code, _, err = run_cli("night", str(log), "-o", str(tmp_path / "web"), "--model",
                           str(shutter_model))
    assert code == 0 and err == "", err
    row = next(r for r in flagged_rows((tmp_path / "web" / "index.html").read_text()))
    assert "h_e_\\xfd.fits" in row and "filter: SDSS-R" in row and "no image" not in row


@pytest.fixture
def small_log(tmp_path) -> Path:
    log = tmp_path / "small.log"
    log.write_text("".join(record_line(f"/data/f{i}.fits", 0.95 if i % 3 else 0.05,
                                       date_obs=f"2025-07-08T22:{i:02d}:00") + "\n"
                           for i in range(20)))
    return log


def test_night_never_follows_a_link_planted_at_its_temporary_names(night, shutter_model,
                                                                   tmp_path):
    out = tmp_path / "web"
    args = ("night", str(night["log"]), "-o", str(out), "--night", NIGHT, "--model",
            str(shutter_model))
    assert run_cli(*args)[0] == 0
    out.chmod(0o2775)  # a group-writable ops folder
    (out / "seen").chmod(0o2775)
    pngs = sorted((out / "seen").glob("*.png"))
    for png in pngs:
        png.unlink()
    (out / "night.png").unlink()
    victim = tmp_path / "precious.txt"
    victim.write_text("the cron user's own file")
    planted = [out / ".index.html.tmp", out / ".night.png.tmp",
               *(png.with_name(f".{png.name}.tmp") for png in pngs)]
    for link in planted:
        link.symlink_to(victim)
    stamp = out / ".night.png.digest"  # a fixed name too, rewritten with each picture
    stamp.unlink()
    stamp.symlink_to(victim)
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert victim.read_text() == "the cron user's own file"
    assert all(link.is_symlink() for link in planted) and not stamp.is_symlink()
    assert all(png.is_file() for png in pngs) and (out / "night.png").is_file()
    assert "night of 2025-07-08" in (out / "index.html").read_text()


def test_overlapping_runs_on_one_folder_all_succeed(small_log, tmp_path):
    out = tmp_path / "web"
    for k in range(3):
        with open(small_log, "a") as fh:  # something new: each round draws the picture
            fh.write(record_line(f"/data/new{k}.fits", 0.97) + "\n")
        procs = [subprocess.Popen([*FRAMEQC, "night", str(small_log), "-o", str(out)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err  # before: "cannot write the night ... (No such
            assert err == ""                  # file or directory)" from a shared temp name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_the_summary_goes_to_stdout_and_problems_to_stderr(small_log, tmp_path):
    def frameqc(*argv: str) -> subprocess.CompletedProcess:  # as cron runs it
        return subprocess.run([*FRAMEQC, *argv], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    proc = frameqc("night", str(small_log), "-o", str(tmp_path / "web"))
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("frameqc night: night of 2025-07-08: 20 frames")
    with open(small_log, "a") as fh:
        fh.write('{"torn": \n')
    proc = frameqc("night", str(small_log), "-o", str(tmp_path / "web"))
    assert proc.returncode == 0 and "20 frames" in proc.stdout
    assert proc.stderr.strip().splitlines() == [
        f"frameqc night: {small_log}: 1 log lines were not records and were skipped"]


def test_frames_without_date_obs_say_they_are_placed_by_log_time(small_log, tmp_path):
    from frameqc.runtime.lifecycle.night import axis_label, placed

    lines = small_log.read_text().splitlines()
    for i in range(0, 20, 2):
        rec = json.loads(lines[i])
        del rec["date_obs"]
        rec["time"] = f"2025-07-08T23:{i:02d}:30+0000"
        lines[i] = json.dumps(rec)
    small_log.write_text("\n".join(lines) + "\n")
    recs = [json.loads(line) for line in lines]
    assert placed(recs[0]) == (datetime(2025, 7, 8, 23, 0, 30), "logged")
    assert placed(recs[1]) == (datetime(2025, 7, 8, 22, 1), "DATE-OBS")
    assert axis_label({"DATE-OBS"}) == "DATE-OBS (UTC)"
    assert axis_label({"logged"}) == "time logged (UTC): no DATE-OBS"
    assert axis_label({"DATE-OBS", "logged"}) == "DATE-OBS, else time logged (UTC)"
    code, _, err = run_cli("night", str(small_log), "-o", str(tmp_path / "web"))
    assert code == 0, err
    page = (tmp_path / "web" / "index.html").read_text()
    assert "10 frames placed by the time they were logged (no usable DATE-OBS)" in page
    rows = "".join(flagged_rows(page))
    assert "<b>23:02:30</b> <span class=muted>(time logged)</span><br>" in rows
    assert "<b>22:01:00</b><br>" in rows  # by its DATE-OBS


def test_the_report_never_follows_a_link_planted_at_its_images(compared, tmp_path):
    report = tmp_path / "report"
    shutil.copytree(compared["report"], report)
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's own file")
    planted = [*sorted((report / "mistakes").glob("*.png")), report / "threshold.png",
               *(report / src for src in re.findall(r'src="(seen/[^"]+)"',
                                                    compared["page"]))]
    assert len(planted) >= 3
    for link in planted:
        link.unlink(missing_ok=True)
        link.symlink_to(victim)
    report.chmod(0o2775)
    code, _, err = run_cli("evaluate", "-m", str(compared["models"][0]), "-m",
                           str(compared["models"][1]), str(compared["root"] / "data"),
                           "--report", str(report))
    assert code == 0, err
    assert victim.read_text() == "the user's own file"
    assert not any(link.is_symlink() for link in planted)  # replaced by the images


def test_select_counts_a_frame_by_its_last_record_and_skips_future_nights(tmp_path):
    from frameqc.runtime.lifecycle.night import Rule, select, trend

    first, second = tmp_path / "watch.log.1", tmp_path / "watch.log"
    first.write_text("".join(record_line(f"/data/f{i}.fits", 0.9) + "\n" for i in range(4)))
    second.write_text(  # f0 decided again a night later; a camera clock 125 years ahead
        record_line("/data/f0.fits", 0.1, date_obs="2025-07-09T21:00:00", night=None) + "\n"
        + record_line("/data/f9.fits", 0.9, date_obs="2150-01-01T21:00:00",
                      night="2150-01-01") + "\n")
    now = datetime(2025, 7, 10, 9, 0)
    chosen = select([first, second], now=now)
    assert chosen.name == "night of 2025-07-09"
    assert [r["path"] for r in chosen.records] == ["/data/f0.fits"]
    chosen = select([first, second], on=NIGHT, now=now)
    assert sorted(r["path"] for r in chosen.records) == [f"/data/f{i}.fits" for i in (1, 2, 3)]
    assert chosen.total == 5
    rule = Rule.of(None, chosen.labels)
    assert trend(chosen.frames, rule, chosen.tonight) == [(NIGHT, 3, 3), ("2025-07-09", 1, 0)]
    assert chosen.ahead() == 1


@pytest.mark.parametrize("frames", [1, 3])
def test_a_night_of_one_moment_is_drawn_over_a_minute(frames):
    """One frame (or frames seconds apart): the time axis is a minute around them, not
    the years matplotlib gives a single date."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure

    from frameqc.runtime.lifecycle.night import Rule, Summary
    from frameqc.runtime.lifecycle.night_plot import _timeline

    recs = [json.loads(record_line(f"/data/f{i}.fits", date_obs=f"2025-07-08T22:00:0{i}"))
            for i in range(frames)]
    ax = Figure().add_subplot()
    _timeline(ax, Summary.of(NIGHT, recs, Rule(("Shutter",), 0.5)))
    lo, hi = ax.get_xlim()
    assert abs((hi - lo) - 1 / 1440) < 1e-9
    assert mdates.num2date(lo).replace(tzinfo=None) < datetime(2025, 7, 8, 22, 0, 0)
    assert mdates.num2date(hi).replace(tzinfo=None) > datetime(2025, 7, 8, 22, 0, frames - 1)
