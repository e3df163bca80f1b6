"""Typed results passed from the measuring stages to the report: per-mode pairs and metric rows."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Generic, NamedTuple, TypeVar

import numpy as np

T = TypeVar("T")


class ByMode(NamedTuple, Generic[T]):
    """One value per engine mode, in the report's order."""

    analytic: T  # the warp alone
    trained: T  # the warp plus the learned refiner's delta


MODES = ByMode._fields  # ("analytic", "trained")


@dataclass(frozen=True)
class FrameMetrics:
    """Base of a frame's metric row: float fields, None where a metric was not measured on that frame."""

    def measured(self) -> Iterator[tuple[str, float]]:
        """(name, value) of the fields that hold a value, in field order."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value


R = TypeVar("R", bound=FrameMetrics)


@dataclass
class MetricRows(Generic[R]):
    """The metric rows of one mode: one per measured frame, and a flicker value per clip or pair."""

    frames: list[R] = field(default_factory=list)
    flicker: list[float] = field(default_factory=list)

    def extend(self, other: MetricRows[R]) -> None:
        self.frames.extend(other.frames)
        self.flicker.extend(other.flicker)

    @property
    def count(self) -> int:
        """Frame rows plus flicker values: what the report has always called its number of frames."""
        return len(self.frames) + len(self.flicker)

    def means(self) -> dict[str, float]:
        """{metric: mean over the rows that measured it (NaN-ignoring)}, names sorted; "flicker" included.

        A metric that no row measured is left out.
        """
        values: dict[str, list[float]] = {}
        for row in self.frames:
            for name, value in row.measured():
                values.setdefault(name, []).append(value)
        if self.flicker:
            values["flicker"] = list(self.flicker)
        return {name: float(np.nanmean(values[name])) for name in sorted(values)}


def concatenated(parts: list[ByMode[MetricRows[R]]]) -> ByMode[MetricRows[R]]:
    """The rows of several clips or pairs, one after the other, per mode."""
    total: ByMode[MetricRows[R]] = ByMode(MetricRows(), MetricRows())
    for part in parts:
        for into, rows in zip(total, part):
            into.extend(rows)
    return total


class Percentiles(NamedTuple):
    """Of a list of timings, milliseconds."""

    p50: float
    p95: float

    @classmethod
    def of(cls, times_ms: list[float]) -> Percentiles:
        return cls(float(np.median(times_ms)), float(np.percentile(times_ms, 95)))
