"""Render the zoo's rows as a markdown table and a summary: ``python zoo/table.py DIR``.

``DIR`` holds one ``<architecture>--<mode>.json`` per row, as ``pytest zoo --zoo-out DIR``
(or ``ZOO_OUT=DIR``) writes them. Standalone: only the standard library.

Example::

    $ python zoo/table.py .tox/zoo/tmp/rows > zoo-table.md
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

MODES = ("int8", "dynamic", "float16", "int16x8")
COLUMNS = (
    "architecture",
    "params",
    "mode",
    "converts",
    "RMS % FS",
    "spec",
    "blame s",
    "top blamed op",
    "stable",
    "convert s cold / warm",
    "peak RSS MB",
)
TF_PREFIXES = (
    "tensorflow.lite.python.convert_phase.ConverterError:",
    "ConverterError:",
    "<unknown>:0:",
    "error:",
)


def load(directory: Path) -> list[dict[str, Any]]:
    """The rows in ``directory``, by architecture then in :data:`MODES` order."""
    rows = [json.loads(p.read_text()) for p in sorted(directory.glob("*--*.json"))]
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(rows, key=lambda r: (r["architecture"], order.get(r["mode"], 99)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _strip_loc(text: str) -> str:
    """``loc(...)`` prefixes of MLIR diagnostics (nested parentheses) removed."""
    while text.startswith("loc("):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if ch == ")" and depth == 0:
                text = text[i + 1 :].lstrip(": ")
                break
        else:
            break
    return text


def tf_says(message: str) -> str:
    """The first line of what TensorFlow's converter said, in a ConversionError's text
    (or its first line when it quotes no converter output: a timeout)."""
    lines = message.splitlines()
    if "Converter output:" in message:
        start = next(i for i, ln in enumerate(lines) if "Converter output:" in ln) + 1
        quoted = [ln.strip() for ln in lines[start:] if ln.startswith("    ") and ln.strip()]
        if quoted:
            text = quoted[0]
            changed = True
            while changed:
                before = text
                for prefix in TF_PREFIXES:
                    if text.startswith(prefix):
                        text = text[len(prefix) :].strip()
                text = _strip_loc(text)
                changed = text != before
            crashed = "crashed" in lines[0]
            return ("crashed: " if crashed else "") + text
    return lines[0] if lines else ""


def hint(message: str) -> str:
    """pytest-quant's hint after the converter output (a line indented by two spaces)."""
    found = [ln.strip() for ln in message.splitlines() if ln.startswith("  ") and ln[2:3] != " "]
    return found[-1] if found else ""


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def converts(row: dict[str, Any]) -> str:
    if row["converts"] == "yes":
        return "yes"
    err = row["errors"]["convert"]
    if err["kind"] == "converter":
        return "converter: " + _short(tf_says(err["message"]))
    first = err["message"].strip().splitlines()[0] if err["message"].strip() else ""
    return f"**ours**: {err['type']}: " + _short(first)


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _ours(row: dict[str, Any], step: str) -> str:
    return "**ours**" if row["errors"].get(step, {}).get("kind") == "ours" else "-"


def cells(row: dict[str, Any]) -> list[str]:
    rms = (
        " / ".join(_num(100 * v, ".3g") for v in row["rmse_fs"])
        if row.get("rmse_fs")
        else _ours(row, "rms")
    )
    if "violations" in row:
        spec = ("ok" if row["violations"] == 0 else f"{row['violations']} violations") + (
            f" ({row['scheme']})" if row["scheme"] == row["mode"] else f" (**{row['scheme']}**)"
        )
    else:
        spec = _ours(row, "spec")
    top = _ours(row, "blame")
    if row.get("top_op"):
        added = row.get("top_added")
        top = row["top_op"] + (f" (+{100 * added:.2g}%)" if added is not None else "")
    if "stable_rerun" in row:
        stable = "yes" if row["stable_rerun"] and row["stable_second_runner"] else "**NO**"
    else:
        stable = _ours(row, "stability")
    return [
        row["architecture"],
        _params(row["params"]),
        row["mode"],
        converts(row),
        rms,
        spec,
        _num(row.get("blame_s"), ".2f") if "blame_s" in row else _ours(row, "blame"),
        top,
        stable,
        f"{_num(row.get('convert_cold_s'), '.1f')} / {_num(row.get('convert_warm_s'), '.2f')}",
        f"{row['peak_rss_mb']:.0f} ({row.get('worker', '?')})",
    ]


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(c) for c in cells(r)) + " |" for r in rows]
    return lines


def defects(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, list[str]]]:
    """pytest-quant's own failures ('ours'), grouped by step, exception type and the start
    of the message: (step, type, first line of the message, rows where it occurred)."""
    found: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
    for r in rows:
        for step in r.get("ours", []):
            err = r["errors"][step]
            first = err["message"].strip().splitlines()[0] if err["message"].strip() else ""
            entry = found.setdefault((step, err["type"], first[:100]), (first, []))
            entry[1].append(f"{r['architecture']} {r['mode']}")
    return [(step, kind, first, where) for (step, kind, _), (first, where) in found.items()]


def _blame_suspect(row: dict[str, Any]) -> bool:
    """Blame's top row adds over 100% of its tensor's float range, yet its error is within
    one step of the tensor's scale."""
    added, steps = row.get("top_added"), row.get("top_rmse_per_scale")
    if added is None or steps is None or math.isnan(steps) or not row.get("top_full_scale"):
        return False
    return added > 1.0 and steps <= 1.0


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """How many convert per mode, what does not and why, and pytest-quant's defects."""
    lines = [
        "",
        "**Converts, per mode:** "
        + ", ".join(
            f"{m} {sum(r['converts'] == 'yes' for r in rows if r['mode'] == m)}"
            f"/{sum(r['mode'] == m for r in rows)}"
            for m in MODES
            if any(r["mode"] == m for r in rows)
        ),
    ]
    why: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in rows:
        err = r["errors"].get("convert")
        if err and err["kind"] == "converter":
            reason = tf_says(err["message"])
            extra = hint(err["message"])
            key = (_short(reason, 160), _short(extra, 200) if extra else "")
            why[key].append(f"{r['architecture']} {r['mode']}")
    if why:
        lines += ["", "**Not converted (the converter's limitation):**"]
        for (reason, extra), where in sorted(why.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"- {', '.join(where)}: {_cell(reason)}")
            if extra:
                lines.append(f"  - pytest-quant's hint: {_cell(extra)}")
    ours = defects(rows)
    lines += [
        "",
        f"**pytest-quant defects ('ours'): {sum(len(d[3]) for d in ours)} "
        f"row(s), {len(ours)} distinct**",
    ]
    for step, kind, first, where in ours:
        lines.append(f"- step `{step}`, {kind}: {_cell(_short(first, 400))}")
        lines.append(f"  - in: {', '.join(where)}")
    mismatched = [
        f"{r['architecture']} {r['mode']} (detected {r['scheme']})"
        for r in rows
        if "scheme" in r and r["scheme"] != r["mode"]
    ]
    if mismatched:
        lines += [
            "",
            "**detect_scheme names another scheme than the mode converted** (in bold in the "
            "spec column; the linter then checks that scheme's rules): " + "; ".join(mismatched),
        ]
    suspect = [
        f"{r['architecture']} {r['mode']} ({r['top_op']} `{r['top_tensor']}`: "
        f"{r['top_rmse_per_scale']:.2g} steps RMS, added {100 * r['top_added']:.3g}% of a "
        f"float range of {r['top_full_scale']:.2g})"
        for r in rows
        if _blame_suspect(r)
    ]
    if suspect:
        lines += [
            "",
            "**Top blamed op within one quantization step of its float value** (its "
            "'added' is large only because the float tensor barely varies: a near-constant "
            "tensor has a tiny range, the full scale of 'added'): " + "; ".join(suspect),
        ]
    unstable = [
        f"{r['architecture']} {r['mode']}"
        for r in rows
        if "stable_rerun" in r and not (r["stable_rerun"] and r["stable_second_runner"])
    ]
    if unstable:
        lines += ["", "**Not stable (outputs differ between runs):** " + ", ".join(unstable)]
    if any(r.get("fresh_cache") is False for r in rows):
        lines += [
            "",
            "*The conversion cache was not empty at the start of the run: cold "
            "times may be cache hits (pass a fresh --quant-cache-dir).*",
        ]
    lines += [
        "",
        "*Random weights (seeded, never trained; BatchNorm statistics estimated on one "
        "random batch), random normal inputs (token ids for the text model): errors "
        "measure the conversion on these weights, not a trained model's accuracy. "
        "Peak RSS is the pytest worker's `ru_maxrss` (worker in parentheses) after the row: "
        "a running peak of that process, not the row's own use; conversions run in child "
        "processes, not counted.*",
    ]
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python zoo/table.py ZOO_OUT_DIR", file=sys.stderr)
        return 2
    rows = load(Path(argv[0]))
    if not rows:
        print(f"no zoo rows (*--*.json) in {argv[0]}", file=sys.stderr)
        return 1
    print("\n".join(table(rows) + summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
