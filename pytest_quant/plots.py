"""Per-check PNGs for ``--quant-report-dir`` (needs the ``plots`` extra: matplotlib).

An LSB error histogram for every check that measured one (``assert_within_lsb``,
``assert_quant_close`` with qparams, ``quant_golden``), and per-layer error bars for a
converted model whose check failed with blame (``assert_tflite_close``).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

IDEAL = 12**-0.5


def _name(record: dict[str, Any], kind: str) -> str:
    raw = f"{record.get('test_id')}__{record['check']}__{record['metric']}__{kind}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw)[:180] + ".png"


def _save(fig: Any, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".png", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plots(directory: str | os.PathLike[str], records: list[dict[str, Any]]) -> list[Path]:
    """Render one PNG per plottable record into ``directory``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for r in records:
        detail = r.get("detail") or {}
        title = f"{r.get('test_id')}\n{r['check']} {r['metric']}: {r['value']} (bound {r['bound']})"
        if "lsb_histogram" in detail:
            hist = {int(k): v for k, v in detail["lsb_histogram"].items()}
            fig, ax = plt.subplots(figsize=(7, 4))
            keys = sorted(hist)
            # LSB checks: red beyond the bound; other checks' bounds are not in LSB
            in_lsb = r["check"] in ("assert_within_lsb", "quant_golden")
            limit = float(r["bound"]) if in_lsb else float("inf")
            colors = ["tab:red" if abs(k) > limit else "tab:blue" for k in keys]
            ax.bar(keys, [hist[k] for k in keys], color=colors)
            ax.set_xlabel("error in LSB (quantization steps)")
            ax.set_ylabel("elements")
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.8)
            ax.set_title(title, fontsize=8)
            fig.tight_layout()
            target = out_dir / _name(r, "lsb_histogram")
            _save(fig, target)
            plt.close(fig)
            written.append(target)
        if "layers" in detail:
            layers = detail["layers"]
            fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(layers)))
            names = [str(n)[-60:] for n, _ in layers][::-1]
            values = [float(v) for _, v in layers][::-1]
            ax.barh(
                names, values, color=["tab:red" if v > 2 * IDEAL else "tab:blue" for v in values]
            )
            ax.axvline(IDEAL, color="k", linestyle="--", label="ideal 0.29")
            ax.set_xscale("log")
            ax.set_xlabel("RMSE in steps of the layer's scale")
            ax.legend(loc="lower right", fontsize=8)
            ax.set_title(title, fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
            fig.tight_layout()
            target = out_dir / _name(r, "layers")
            _save(fig, target)
            plt.close(fig)
            written.append(target)
    return written
