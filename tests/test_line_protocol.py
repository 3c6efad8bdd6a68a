"""Line protocol for DATE-OBS values a real night brings, checked against a real influxd."""

from __future__ import annotations

import pytest
from influx import DB, Influx

from frameqc.runtime.output.line_protocol import line, timestamp_ns

ABSURD = ("0001-01-01T00:00:00", "9999-12-31T23:59:59", "1600-01-01T00:00:00",
          "2300-01-01T00:00:00")


@pytest.mark.parametrize("date_obs", ABSURD)
def test_a_date_influxdb_cannot_store_is_stamped_now(date_obs):
    assert timestamp_ns(date_obs, now_ns=123) == 123
    assert timestamp_ns("2262-04-11T00:00:00", now_ns=123) != 123  # the edge still counts


@pytest.mark.influxd
def test_influxdb_takes_every_point_and_keeps_the_header_text(tmp_path):
    from frameqc.runtime.senders.influx_api import post, write_url

    server = Influx(tmp_path)
    server.start()
    try:
        server.query(f'CREATE DATABASE "{DB}"', db=None)
        recs = [{"path": f"/data/{i}.fits", "label": "OK", "probability": 0.9,
                 "probabilities": {"OK": 0.9, "Shutter": 0.1}, "date_obs": d,
                 "model": "0123456789ab", "precision": "fp32"} for i, d in enumerate(ABSURD)]
        url, headers = write_url(server.write_url)
        post(url, headers, [line(r) for r in recs])
        rows = server.rows('SELECT "path", "date_obs" FROM "frameqc"')
        assert sorted(r["date_obs"] for r in rows) == sorted(ABSURD)
    finally:
        server.stop()


@pytest.mark.parametrize(("date_obs", "night", "stamp_ms"), [
    ("2025-07-09T02:15:00.5", "2025-07-08", 1752027300500),  # FITS: UTC, no zone
    ("2025-07-09T04:15:00+02:00", "2025-07-08", 1752027300000),  # a zone is honoured
    ("2025-07-09T02:15:00 UT", "2025-07-08", 1752027300000),  # a suffix ISO lacks: passed over
    ("2025-07-09T03:15:00.25+01:00 UT", "2025-07-08", 1752027300250),  # ... keeping the zone
    ("2025-07-09", "2025-07-09", None),  # a date, no time: its own night, stamped now
    ("0001-01-01T00:30:00+01:00", None, None),  # off the calendar in UTC
    ("9999-12-31T23:59:59", None, None),
    ("yesterday", None, None)])
def test_one_reading_of_date_obs_for_the_night_the_page_and_influxdb(date_obs, night, stamp_ms):
    from datetime import datetime, timedelta

    from frameqc.runtime.lifecycle.night import placed
    from frameqc.runtime.output.record import night_of

    assert night_of(date_obs) == night
    assert timestamp_ns(date_obs, now_ns=7) == (7 if stamp_ms is None else stamp_ms * 10**6)
    when, clock = placed({"date_obs": date_obs, "time": "2025-07-10T00:00:00+00:00"})
    if stamp_ms is None:
        assert clock == "logged"
    else:
        assert clock == "DATE-OBS" and when == datetime(1970, 1, 1) + timedelta(
            milliseconds=stamp_ms)
