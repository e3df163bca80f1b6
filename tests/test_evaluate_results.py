"""Metric rows average into the report's per-mode means exactly as the report has always counted them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from enliven.evaluate.results import MODES, ByMode, FrameMetrics, MetricRows, Percentiles, concatenated


@dataclass(frozen=True)
class Row(FrameMetrics):
    zeta: float
    alpha: float | None = None


def test_means_skip_unmeasured_values_ignore_nan_and_sort_names() -> None:
    rows = MetricRows([Row(1.0, 10.0), Row(3.0), Row(float("nan"), 20.0)], flicker=[0.5, 0.25])
    means = rows.means()
    assert list(means) == ["alpha", "flicker", "zeta"]
    assert means == {"alpha": 15.0, "flicker": 0.375, "zeta": 2.0}
    assert rows.count == 5  # frame rows and flicker values, as the report's frame counts always were


def test_a_metric_no_row_measured_is_left_out() -> None:
    assert MetricRows([Row(2.0)]).means() == {"zeta": 2.0}
    assert MetricRows[Row]().means() == {}


def test_measured_lists_fields_in_order() -> None:
    assert list(Row(1.0, 2.0).measured()) == [("zeta", 1.0), ("alpha", 2.0)]
    assert list(Row(1.0).measured()) == [("zeta", 1.0)]


def test_concatenated_keeps_the_order_of_parts_per_mode() -> None:
    part1 = ByMode(MetricRows([Row(1.0)], [0.1]), MetricRows([Row(2.0)], [0.2]))
    part2 = ByMode(MetricRows([Row(3.0)], []), MetricRows([Row(4.0)], [0.4]))
    total = concatenated([part1, part2])
    assert [r.zeta for r in total.analytic.frames] == [1.0, 3.0] and total.analytic.flicker == [0.1]
    assert [r.zeta for r in total.trained.frames] == [2.0, 4.0] and total.trained.flicker == [0.2, 0.4]
    assert part1.analytic.frames == [Row(1.0)]  # the parts are not changed
    assert MODES == ("analytic", "trained")


def test_percentiles_reference_values() -> None:
    times = [float(t) for t in range(1, 101)]
    p = Percentiles.of(times)
    assert p.p50 == 50.5 and p.p95 == pytest.approx(95.05)
    assert Percentiles.of([3.0]) == Percentiles(3.0, 3.0)
    assert Percentiles.of(times)._asdict() == {"p50": 50.5, "p95": float(np.percentile(times, 95))}
