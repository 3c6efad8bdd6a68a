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
