"""The ``quant_golden`` fixture's object: compare outputs with their golden, or write it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from . import _settings, messages
from ._checks import as_float_array
from ._intdiff import int_difference
from .assertions import record
from .golden import GoldenError, check_name, describe_fingerprint, fingerprint, read, write
from .metrics import compare
from .qparams import QuantParams

MAX_WORST = 5


class QuantGolden:
    """Golden outputs for one test. Use :meth:`check`.

    Example::

        def test_int8_outputs(quant_golden, int8_model, x_fixed):
            quant_golden.check("digits_mlp", int8_model.quantized(x_fixed), runner=int8_model)
    """

    def __init__(
        self,
        directory: Path,
        *,
        update: bool,
        on_touch: Callable[[Path, bool], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.update = update
        self._on_touch = on_touch or (lambda path, written: None)

    def path(self, name: str) -> Path:
        """Where golden ``name`` lives (its ``.npz``; the sidecar is ``.json`` beside it)."""
        return self.directory / f"{check_name(name)}.npz"

    def check(
        self,
        name: str,
        outputs: Any,
        *,
        qparams: Any = None,
        max_lsb: int | None = None,
        tolerance: float | None = None,
        runner: Any = None,
    ) -> None:
        """Compare ``outputs`` (an array, or a dict of arrays) with golden ``name``.

        Integer arrays are compared in LSB (default ``--quant-max-lsb``), float arrays by
        RMS error / full scale (default ``--quant-tolerance``). ``qparams`` (a
        ``QuantParams`` or a dict by output) are stored with the golden; pass ``runner``
        (a ``TFLiteRunner``) to record its model sha256 and interpreter options and to
        take the qparams from it. A missing golden fails, saying how to create it;
        ``--quant-golden-update`` writes missing or mismatching goldens. A corrupt golden
        fails naming the file; it never passes. ``name`` is a plain file name
        (:data:`pytest_quant.golden.NAME_RULE`), else ``ValueError``.
        """
        __tracebackhide__ = True
        check_name(name)
        arrays = _arrays(outputs)
        qps = _qparams(qparams, runner, arrays)
        fp = fingerprint(runner=runner)
        npz = self.path(name)
        problem: str | None = None
        try:
            golden = read(self.directory, name)
        except GoldenError as exc:
            problem = str(exc)  # names the file, what is wrong and the fix
        if problem is not None:
            if self.update:
                self._write(name, arrays, qps, fp)
                return
            if npz.exists():
                self._on_touch(npz, False)  # checked (and found broken): not unused
            pytest.fail(problem, pytrace=False)
        failures = self._compare(name, arrays, golden, fp, max_lsb, tolerance)
        if failures and self.update:
            self._write(name, arrays, qps, fp)
            return
        self._on_touch(npz, False)
        if failures:
            raise AssertionError("\n".join(failures))

    def _write(self, name: str, arrays: dict[str, np.ndarray], qps: Any, fp: Any) -> None:
        npz, _ = write(self.directory, name, arrays, qps, fp)
        self._on_touch(npz, True)

    def _compare(
        self,
        name: str,
        arrays: dict[str, np.ndarray],
        golden: Any,
        fp: dict[str, Any],
        max_lsb: int | None,
        tolerance: float | None,
    ) -> list[str]:
        s = _settings.current()
        path = str(self.path(name))
        if set(arrays) != set(golden.arrays):
            return [
                f"golden {name!r} ({path}) holds outputs {sorted(golden.arrays)}, "
                f"this run produced {sorted(arrays)}"
            ]
        out = []
        for key in sorted(arrays):
            now, gold = arrays[key], golden.arrays[key]
            if now.shape != gold.shape or (now.dtype.kind in "iu") != (gold.dtype.kind in "iu"):
                out.append(
                    f"golden {name!r} ({path}), output {key!r}: now {now.dtype}{list(now.shape)}"
                    f", golden {gold.dtype}{list(gold.shape)}"
                )
                continue
            common = dict(
                name=name,
                path=path,
                key=key,
                golden_fp=describe_fingerprint(golden.fingerprint),
                current_fp=describe_fingerprint(fp),
                written=golden.written,
            )
            if now.dtype.kind in "iu":
                lsb_bound = s.max_lsb if max_lsb is None else _settings.parse_max_lsb(max_lsb)
                origin = s.max_lsb_from if max_lsb is None else f"the argument max_lsb={lsb_bound}"
                diff = int_difference(now, gold)  # exact: int64/uint64 never wrap
                worst = int(np.abs(diff).max())
                values, counts = np.unique(diff, return_counts=True)
                hist = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
                record(
                    "quant_golden",
                    f"{name}:{key}:max_lsb",
                    float(worst),
                    float(lsb_bound),
                    worst <= lsb_bound,
                    detail={"lsb_histogram": hist},
                )
                if worst > lsb_bound:
                    headline = (
                        f"differs by up to {worst} LSB, bound {lsb_bound} LSB; "
                        f"{int(np.count_nonzero(diff))} of {diff.size} elements changed"
                    )
                    out.append(
                        messages.golden_failure(
                            headline=headline,
                            worst=_worst(diff, now, gold),
                            hist=hist,
                            origin=origin,
                            source=_settings.MAX_LSB_SOURCE,
                            **common,
                        )
                    )
            else:
                bound = s.tolerance if tolerance is None else float(tolerance)
                origin = (
                    s.tolerance_from if tolerance is None else f"the argument tolerance={bound}"
                )
                stats = compare(now, gold)
                record(
                    "quant_golden",
                    f"{name}:{key}:rms_error",
                    stats.rmse_fs,
                    bound,
                    stats.rmse_fs <= bound,
                )
                if stats.rmse_fs > bound:
                    headline = (
                        f"RMS error {100 * stats.rmse_fs:.4g}% of full scale, "
                        f"bound {100 * bound:.4g}%"
                    )
                    diff = now.astype(np.float64) - gold.astype(np.float64)
                    out.append(
                        messages.golden_failure(
                            headline=headline,
                            worst=_worst(diff, now, gold),
                            hist=None,
                            origin=origin,
                            source=_settings.TOLERANCE_SOURCE,
                            **common,
                        )
                    )
        return out


def _worst(
    diff: np.ndarray, now: np.ndarray, gold: np.ndarray
) -> list[tuple[tuple[int, ...], Any, Any]]:
    flat = np.abs(diff).ravel()
    order = np.lexsort((np.arange(flat.size), -flat))[:MAX_WORST]  # largest first, then index
    rows = []
    for i in order:
        if flat[i] == 0:
            break
        idx = tuple(int(v) for v in np.unravel_index(int(i), diff.shape))
        rows.append((idx, now[idx].item(), gold[idx].item()))
    return rows


def _arrays(outputs: Any) -> dict[str, np.ndarray]:
    items = outputs.items() if isinstance(outputs, Mapping) else [("output", outputs)]
    arrays = {}
    for key, value in items:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = as_float_array(arr, f"outputs[{key!r}]")  # no NaN ever becomes a golden
        elif arr.dtype.kind not in "iu":
            raise TypeError(f"outputs[{key!r}] has dtype {arr.dtype}: pass numbers")
        if arr.size == 0:
            raise ValueError(f"outputs[{key!r}] is empty")
        arrays[str(key)] = arr
    return arrays


def _qparams(qparams: Any, runner: Any, arrays: dict[str, np.ndarray]) -> dict[str, QuantParams]:
    if qparams is None and runner is not None:
        qparams = runner.output_qparams
        if isinstance(qparams, tuple):
            qparams = dict(zip(runner.output_names, qparams, strict=True))
    if qparams is None:
        return {}
    if isinstance(qparams, QuantParams):
        return {key: qparams for key in arrays}
    return {str(k): v for k, v in dict(qparams).items() if v is not None}
