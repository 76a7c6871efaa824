"""Check records: the terminal summary table and the JSON report. Imports nothing heavy.

Records travel from the test (any xdist worker) to the controller inside the test's
``user_properties`` as ``("quant_check", <json>)``, which is also how they reach
JUnit XML as properties.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

PROPERTY = "quant_check"
MAX_TABLE_ROWS = 20


def from_user_properties(props: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The check records among a report's ``user_properties``."""
    return [json.loads(v) for k, v in props if k == PROPERTY]


def _rel_margin(r: dict[str, Any]) -> float:
    try:
        margin, bound = float(r["margin"]), float(r["bound"])
    except (TypeError, ValueError):
        return float("-inf")
    return margin / abs(bound) if bound else margin


def worst_first(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures first, then by margin relative to the bound, smallest first; ties by id."""
    return sorted(records, key=lambda r: (r["passed"], _rel_margin(r), str(r.get("test_id"))))


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def counts(records: list[dict[str, Any]]) -> tuple[int, int]:
    """(checks, failed checks); info records (blame behind a failure) are not checks."""
    checks = [r for r in records if not r.get("info")]
    return len(checks), sum(not r["passed"] for r in checks)


def table(records: list[dict[str, Any]], *, report_path: str | None = None) -> list[str]:
    """Lines of the terminal summary: one row per check, worst first, capped."""
    rows = worst_first(records)
    shown = rows[:MAX_TABLE_ROWS]
    cells = [
        (
            str(r.get("test_id")),
            r["check"],
            r["metric"],
            _num(r["value"]),
            _num(r["bound"]),
            _num(r["margin"]),
            "info" if r.get("info") else "ok" if r["passed"] else "FAIL",
        )
        for r in shown
    ]
    head = ("test", "check", "metric", "value", "bound", "margin", "")
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *cells]
    ]
    checks, failed = counts(records)
    lines.append(f"{checks} quant checks, {failed} failed")
    if len(rows) > len(shown):
        where = (
            f" (all of them in {report_path})"
            if report_path
            else " (--quant-report=PATH keeps all)"
        )
        lines.append(f"... {len(rows) - len(shown)} more rows not shown{where}")
    return lines


def write_json(
    path: str | os.PathLike[str], records: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """Write the report atomically: a temp file in the same directory, then ``os.replace``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **meta,
        "summary": dict(zip(("checks", "failed"), counts(records), strict=True)),
        "records": sorted(records, key=lambda r: (str(r.get("test_id")), r["check"], r["metric"])),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
