"""`difffusr schedule`'s window rule (pipeline.cluster.schedule): the date alone picks the window, so a late
or retried CronJob run fills the same window into the same RayJob name."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from pipeline.cli import main
from pipeline.cluster.schedule import latest_window, render
from pipeline.errors import ConfigError

TEMPLATE = "kind: RayJob\nmetadata:\n  name: prod-@WINDOW_ID@\nspec:\n  entrypoint: run --datetime @WINDOW@\n"


def test_month_is_the_previous_calendar_month_whatever_the_day():
    for day in (1, 3, 31):
        assert latest_window(dt.date(2024, 3, day), "month") == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert latest_window(dt.date(2024, 1, 15), "month") == (dt.date(2023, 12, 1), dt.date(2023, 12, 31))


def test_n_day_windows_tile_time_from_1970_and_end_before_today():
    start, end = latest_window(dt.date(2024, 7, 3), "10d")
    assert (end - start).days == 9 and end < dt.date(2024, 7, 3) <= end + dt.timedelta(days=10)
    assert (start - dt.date(1970, 1, 1)).days % 10 == 0
    # the next window starts the day after this one ends: no gap, no overlap
    assert latest_window(end + dt.timedelta(days=11), "10d")[0] == end + dt.timedelta(days=1)
    with pytest.raises(ConfigError, match=r"--window '0d' is not 'month' or '<N>d'"):
        latest_window(dt.date(2024, 7, 3), "0d")


def test_render_fills_the_window_and_its_id():
    doc = render(TEMPLATE, dt.date(2024, 6, 1), dt.date(2024, 6, 30))
    assert doc["metadata"]["name"] == "prod-20240601-20240630"
    assert doc["spec"]["entrypoint"] == "run --datetime 2024-06-01/2024-06-30"
    with pytest.raises(ConfigError, match="not valid YAML"):
        render("kind: [RayJob", dt.date(2024, 6, 1), dt.date(2024, 6, 30))


def test_dry_run_prints_the_rayjob_of_the_window(capsys, tmp_path):
    template = tmp_path / "rayjob.yaml"
    template.write_text(TEMPLATE)
    argv = [
        "schedule",
        "--template",
        str(template),
        "--window",
        "month",
        "--today",
        "2024-07-03",
        "--dry-run",
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["name"] == "prod-20240601-20240630"
