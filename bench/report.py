"""The figure table: each figure has a value, a unit, a goal and whether the goal is met.

A goal is ``"<op> <bound>"`` with op one of ``<=``, ``>=``, ``<``, ``>``, ``==``; a figure
without a goal is informational (``met`` is ``None``). Section rows (``section()``) only
title the figures that follow; they are left out of the JSON figures.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

_OPS = {
    "<=": lambda v, b: v <= b,
    ">=": lambda v, b: v >= b,
    "<": lambda v, b: v < b,
    ">": lambda v, b: v > b,
    "==": lambda v, b: v == b,
}


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    goal: str = ""  # e.g. "<= 0.5"
    met: bool | None = None  # None: informational, no goal
    note: str = ""
    section: bool = False


def check(value: float, goal: str) -> bool:
    """Whether ``value`` meets ``goal`` (e.g. ``"<= 1.25"``); NaN never meets a goal."""
    op, _, bound = goal.partition(" ")
    try:
        limit = float(bound)
    except ValueError:
        limit = math.nan
    if op not in _OPS or math.isnan(limit):
        raise ValueError(f"bad goal {goal!r}: expected '<op> <number>' with op in {list(_OPS)}")
    return not math.isnan(value) and bool(_OPS[op](value, limit))


def figure(name: str, value: float, unit: str, goal: str = "", note: str = "") -> Figure:
    """A figure, with ``met`` computed from ``goal`` (``None`` without a goal)."""
    return Figure(name, float(value), unit, goal, check(value, goal) if goal else None, note)


def section(title: str) -> Figure:
    """A title row for the table (not a figure)."""
    return Figure(title, math.nan, "", section=True)


def _value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"


def render(figures: list[Figure]) -> str:
    """The figures as an aligned text table (sections as title lines)."""
    header = ("figure", "value", "unit", "goal", "met", "note")
    rows: list[tuple[str, ...] | str] = []
    for f in figures:
        if f.section:
            rows.append(f.name)
            continue
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.name, _value(f.value), f.unit, f.goal, met, f.note))
    cells = [header] + [r for r in rows if isinstance(r, tuple)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(f"[{row}]" if isinstance(row, str) else line(row) for row in rows)
    return "\n".join(out)


def _json_value(value: float) -> float | None:
    return None if math.isnan(value) else value


def write_json(
    figures: list[Figure], path: Path, *, quick: bool = False, seconds: float | None = None
) -> None:
    """Write the figures (sections left out, NaN as null) with the machine they ran on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    current = ""
    rows = []
    for f in figures:
        if f.section:
            current = f.name
            continue
        row = asdict(f)
        del row["section"]
        row["value"] = _json_value(f.value)
        row["group"] = current
        rows.append(row)
    document = {
        "generatedAt": datetime.now(UTC).isoformat(),
        "quick": quick,
        "seconds": seconds,
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "system": platform.system(),
            "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "figures": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
