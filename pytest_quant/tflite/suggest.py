"""Which ops to keep in float so a failing int8 model meets its bound: a search over blame.

Each candidate set is converted with TF's selective quantization (``keep_float``: the
ops' output tensors go to the MLIR quantizer's ``denylisted_nodes``, as
``QuantizationDebugOptions(denylisted_nodes=...)`` does) through the isolated, cached
converter, and measured against the float model with the metric and bound of
``assert_tflite_close``. Candidates come from per-tensor blame; besides
the blamed op alone, each step tries the producer and readers of a tensor together,
because a tensor whose int8 scale is ruined (one outlier unit dominating its range) is
fixed only when neither side of it stays int8. The first set that meets the bound is
pruned of the ops it does not need.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the default largest number of ops the search may keep in float
DEFAULT_MAX_LAYERS = 8
#: the default largest number of models the search asks of the converter (measured: 5 for
#: the outlier MLP of the tests, 5 for MobileNetV2 with an outlier channel, 11 before it
#: gives up on MobileNetV2 on random weights, whose error is spread over its ops)
DEFAULT_MAX_CONVERSIONS = 24
#: samples blame runs on (its cost grows with them; the bound is measured on all of ``x``)
BLAME_SAMPLES = 256
#: a step is taken when it closes at least this fraction of the gap to the bound
MIN_GAIN = 0.05
#: blamed tensors in a row whose candidates gain less than ``MIN_GAIN`` before the search
#: stops (measured: on MobileNetV2 with random weights no candidate of 40 gained 5% of the
#: gap; with this stop the search ends after 11 conversions)
PATIENCE = 3
_CASTS = frozenset({"QUANTIZE", "DEQUANTIZE"})


@dataclass(frozen=True)
class SearchStep:
    """One measured model: the ops kept float (``keep_float``: their output tensors'
    names; ``kept``: how many ops), its error (the check's metric, the worst output),
    size in bytes, how many non-cast ops compute in float, and why it was tried."""

    keep_float: tuple[str, ...]
    kept: int
    error: float
    passed: bool
    size: int
    float_ops: int
    why: str


@dataclass
class FloatSuggestion:
    """What :func:`suggest_float_layers` found.

    ``keep_float`` is the smallest set found that meets the bound (``()`` when the int8
    model meets it already), or ``None`` when no set of at most ``max_layers`` ops did;
    ``best`` is then the lowest-error set tried. ``steps`` lists every model measured,
    the int8 model first. ``conversions`` counts the models asked of the converter, the
    float reference of blame included (a cached one costs nothing), ``seconds`` the
    search's wall time, blame included.
    ``str()`` gives the report; :meth:`summary` its first line.
    """

    keep_float: tuple[str, ...] | None
    metric: str
    bound: float
    bound_from: str
    ops: int
    max_layers: int
    steps: list[SearchStep] = field(default_factory=list)
    conversions: int = 0
    seconds: float = 0.0
    stopped: str = ""

    @property
    def found(self) -> bool:
        """Whether a set meeting the bound was found (``()`` counts: nothing needed)."""
        return self.keep_float is not None

    @property
    def baseline(self) -> SearchStep:
        """The int8 model as it is."""
        return self.steps[0]

    @property
    def best(self) -> SearchStep:
        """The suggested step, or the lowest-error step tried when none met the bound."""
        if self.keep_float is not None:
            return self.step(self.keep_float)
        return min(self.steps, key=lambda s: (s.error, len(s.keep_float)))

    def step(self, keep_float: Sequence[str]) -> SearchStep:
        """The measured step of a set of ops (``KeyError`` if it was not measured)."""
        key = tuple(sorted(keep_float))
        for s in self.steps:
            if s.keep_float == key:
                return s
        raise KeyError(key)

    def summary(self) -> str:
        """One line: what to keep in float, the error before and after, and the cost."""
        base, what, fs = self.baseline, _METRIC_WORDS[self.metric], _unit(self.metric)
        bound = "bound " + (
            f"{self.bound:g}" if self.metric == "rel_l2" else f"{100 * self.bound:g}%"
        )
        if self.keep_float == ():
            return (
                f"nothing needs to stay float: the int8 model's {what} is "
                f"{_pct(base.error, self.metric)}{fs} ({bound})"
            )
        best = self.best
        if self.keep_float is None:
            return (
                f"no set of up to {_plural(self.max_layers, 'op')} kept in float brings the {what} "
                f"within the {bound}{fs} in the {len(self.steps)} models tried: the best, "
                f"{best.kept} of {self.ops} int8 ops in float, gives "
                f"{_pct(best.error, self.metric)} (int8: {_pct(base.error, self.metric)})"
            )
        return (
            f"keep {best.kept} of {self.ops} int8 ops in float and the {what} drops "
            f"from {_pct(base.error, self.metric)} to {_pct(best.error, self.metric)}{fs} "
            f"({bound}); cost: {_kb(best.size - base.size, sign=True)} "
            f"({_kb(base.size)} -> {_kb(best.size)}), {best.float_ops} float ops"
        )

    def lines(self, *, steps: bool = True) -> list[str]:
        """The report as lines: the summary, the ``keep_float`` to adopt (or, when none
        meets the bound, the closest set if it gained anything), the cost of the search
        and (``steps``) a table of the models measured."""
        lines = [self.summary()]
        best, base = self.best, self.baseline
        gained = base.error - best.error >= MIN_GAIN * (base.error - self.bound)
        if best.keep_float and (self.found or gained):
            verb = "adopt it with" if self.found else "closest tried:"
            lines.append(f"  {verb} quant_tflite(model, data, keep_float=[")
            lines += [f"      {name!r}," for name in best.keep_float]
            lines.append("  ])")
        elif not self.found:
            lines.append(
                f"  no set tried closes {MIN_GAIN:.0%} of the gap to the bound: this error "
                "is not made by a few ops that float would fix (it may be spread over many "
                "ops, or made where the model's int8 inputs and outputs are quantized, e.g. "
                "by calibration data that misses their range)"
            )
        lines.append(
            f"  search: {_plural(self.conversions, 'conversion')} (cached ones are free), "
            f"{self.seconds:.1f} s{'; ' + self.stopped if self.stopped else ''}"
        )
        if steps:
            lines.append(f"  {'error':>8}  {'size':>9}  {'float ops':>9}  tried")
            shown = self.steps[:MAX_STEP_ROWS]
            for s in shown:
                mark = "ok" if s.passed else "  "
                lines.append(
                    f"  {_pct(s.error, self.metric):>8}  {_kb(s.size):>9}  {s.float_ops:>9}  "
                    f"{mark} {s.why}"
                )
            if len(self.steps) > len(shown):
                lines.append(f"  ... {len(self.steps) - len(shown)} more")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())


#: step rows the report shows
MAX_STEP_ROWS = 12
_METRIC_WORDS = {
    "rms": "rms error",
    "max": "max error",
    "p99": "99th percentile error",
    "rel_l2": "relative L2 error",
}


def _unit(metric: str) -> str:
    return "" if metric == "rel_l2" else " of full scale"


def _pct(v: float, metric: str) -> str:
    if metric == "rel_l2":
        return f"{v:.4g}"
    return f"{100 * v:.2f}%" if math.isfinite(v) else str(v)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _kb(n: int, *, sign: bool = False) -> str:
    text = f"{abs(n) / 1024:.1f} KB"
    return (("+" if n >= 0 else "-") + text) if sign else text


def short(name: str) -> str:
    """A fused tensor name's first part (``a/MatMul;a/Relu;a/BiasAdd`` -> ``a/MatMul``)."""
    return name.split(";")[0]


class _Ops:
    """The int8 model's quantized ops (those writing a quantized tensor: the ones that can
    stay float), named by their output tensors (the names ``keep_float`` takes), with who
    writes and who reads each activation tensor."""

    def __init__(self, content: bytes) -> None:
        from .blame import _Graph

        self.graph = g = _Graph(content)
        self.ops = [
            op for op in g.ops if op.name not in _CASTS and any(t.quantized for t in op.outputs)
        ]
        self.key = {op.index: tuple(t.name for t in op.outputs) for op in self.ops}
        self.by_tensor = {t.name: op.index for op in self.ops for t in op.outputs}
        self.readers: dict[int, list[int]] = {}
        for op in self.ops:
            for t in g.activations(op):
                self.readers.setdefault(t, []).append(op.index)

    def groups(self, tensor: str) -> list[tuple[str, frozenset[int]]]:
        """Candidate sets for a blamed tensor: its op alone; each activation input kept
        float with its producer and all its readers; its own readers with it."""
        index = self.by_tensor.get(tensor)
        if index is None:
            return []
        op = self.graph.ops[index]
        out = [(f"blamed: {short(tensor)}", frozenset({index}))]
        for i in self.graph.activations(op):
            producer = self.graph.producer.get(i)
            if producer is None or producer.index not in self.key:
                continue  # a model input, or a tensor no quantized op writes
            name = next((o.name for o in producer.outputs if o.index == i), str(i))
            out.append(
                (
                    f"writer and readers of {short(name)} (input of {short(tensor)})",
                    frozenset({producer.index, *self.readers.get(i, [])}),
                )
            )
        for t in op.outputs:
            if self.readers.get(t.index):
                out.append(
                    (
                        f"writer and readers of {short(t.name)}",
                        frozenset({index, *self.readers[t.index]}),
                    )
                )
        return out

    def names(self, indices: frozenset[int] | set[int]) -> tuple[str, ...]:
        return tuple(sorted(n for i in indices for n in self.key[i]))


def float_ops(content: bytes) -> int:
    """How many non-cast ops of a model compute in float (write a float tensor)."""
    from .flatbuffer import decode, read_model

    return sum(
        1
        for op in decode(read_model(content))
        if op.name not in _CASTS and any(t.dtype.startswith("FLOAT") for t in op.outputs)
    )


def _error(actual: Any, expected: Any, metric: str) -> float:
    """The check's metric on the worst output (``assert_tflite_close`` checks each)."""
    from ..assertions import METRICS
    from ..metrics import compare
    from .checks import _output

    field_name = METRICS[metric][0]
    if isinstance(actual, dict):
        values = [
            float(getattr(compare(v, _output(expected, name, i)), field_name))
            for i, (name, v) in enumerate(actual.items())
        ]
        return max(values)
    return float(getattr(compare(actual, expected), field_name))


def _first(x: Any, n: int) -> Any:
    if isinstance(x, Mapping):
        return {k: np.asarray(v)[:n] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(v)[:n] for v in x]
    return np.asarray(x)[:n]


@dataclass
class _Search:
    """The state of one search: the measured sets (each converted once), their models,
    and the conversion budget."""

    measure_set: Callable[[tuple[str, ...]], tuple[float, bytes]]
    bound: float
    max_conversions: int
    ops: _Ops | None = None
    steps: list[SearchStep] = field(default_factory=list)
    seen: dict[tuple[str, ...], SearchStep] = field(default_factory=dict)
    contents: dict[tuple[str, ...], bytes] = field(default_factory=dict)
    conversions: int = 0

    def measure(self, indices: set[int] | frozenset[int], why: str) -> SearchStep | None:
        """The step for the ops ``indices`` kept float (measured once); ``None`` when the
        budget is spent."""
        key = self.ops.names(indices) if self.ops is not None else ()
        if key in self.seen:
            return self.seen[key]
        if self.conversions >= self.max_conversions:
            return None
        self.conversions += 1
        error, content = self.measure_set(key)
        step = SearchStep(
            key, len(indices), error, error <= self.bound, len(content), float_ops(content), why
        )
        self.steps.append(step)
        self.seen[key] = step
        self.contents[key] = content
        return step


def suggest_float_layers(
    source: Any,
    representative_data: Any = None,
    x: Any = None,
    *,
    tolerance: float | None = None,
    metric: str | None = None,
    max_layers: int = DEFAULT_MAX_LAYERS,
    max_conversions: int = DEFAULT_MAX_CONVERSIONS,
    reference: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    via: str = "saved_model",
    converter_options: Mapping[str, Any] | None = None,
    kernels: str | None = None,
) -> FloatSuggestion:
    """Search for the fewest ops to keep in float so the int8 model meets its bound.

    :param source: the float model (Keras 3 or tf_keras, or a SavedModel directory), or
        a runner ``quant_tflite`` made in int8: ``suggest_float_layers(runner, x)``
        takes its model, calibration data and settings, and starts from the ops it
        already keeps in float (its ``keep_float``), if any.
    :param representative_data: the int8 calibration data (as for ``quant_tflite``).
    :param x: the inputs the bound is checked on (as for ``assert_tflite_close``).
    :param tolerance: the bound; ``None``: the running test's ``--quant-tolerance``.
    :param metric: ``"rms"`` (default), ``"max"``, ``"p99"`` or ``"rel_l2"``, as
        ``assert_tflite_close``; with several outputs the worst one counts.
    :param max_layers: the largest number of ops the search may keep in float.
    :param max_conversions: the largest number of models it asks of the converter (the
        int8 model and blame's float reference included; cached ones cost nothing).
    :param reference: the float model or its outputs, as ``assert_tflite_close`` takes
        it; ``None``: ``source`` (a SavedModel directory: its float ``.tflite``).
    :param cache_dir, via, converter_options: as ``convert`` takes them (a runner's own).
    :param kernels: the interpreter kernels the models run on (``None``: the runner's,
        else ``"xnnpack"``).
    :returns: a :class:`FloatSuggestion`; ``print()`` it, or pass its ``keep_float`` to
        ``quant_tflite(..., keep_float=...)``.

    Each step converts the model with a set of ops kept in float (TF's selective
    quantization, ``convert(..., keep_float=...)``) and measures it. Candidates come
    from per-tensor blame of the current model, worst ``added`` first: the blamed op
    alone, and the writer and all readers of each tensor around it together (a tensor
    with a ruined int8 scale is fixed only when no side of it stays int8). A step is
    taken when it closes at least 5% of the gap to the bound, and blame is re-run on the
    new model; the first set meeting the bound is then pruned of ops it does not need.

    Example::

        found = suggest_float_layers(model, x_calib, x_test, tolerance=0.02)
        print(found)
        runner = quant_tflite(model, x_calib, keep_float=found.keep_float)
    """
    __tracebackhide__ = True
    from ..assertions import METRICS, _tolerance

    start = time.monotonic()
    begin: tuple[str, ...] = ()  # the ops the runner keeps in float: where the search starts
    if hasattr(source, "content") and hasattr(source, "origin"):
        origin = source.origin
        if origin is None:
            raise TypeError(
                "suggest_float_layers needs the float model: pass it (with "
                "representative_data), or a runner made by quant_tflite(model, data)"
            )
        if x is None:
            representative_data, x = None, representative_data
        kernels = kernels or getattr(source, "options", {}).get("kernels")
        source, representative_data = origin.source, origin.representative_data
        if origin.mode != "int8":
            raise ValueError(
                f"suggest_float_layers searches int8 models; this runner is {origin.mode}"
            )
        cache_dir = cache_dir if cache_dir is not None else origin.cache_dir
        via, converter_options = origin.via, origin.converter_options
        begin = tuple(origin.keep_float or ())
    if x is None:
        raise TypeError("suggest_float_layers needs x: the inputs the bound is checked on")
    if representative_data is None:
        raise ValueError(
            "suggest_float_layers needs representative_data: keeping ops in float "
            "re-quantizes the model from its calibration"
        )
    name = metric or "rms"
    if name not in METRICS:
        raise ValueError(f"metric={metric!r}: use one of {', '.join(METRICS)}")
    for arg, value in (("max_layers", max_layers), ("max_conversions", max_conversions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}={value!r}: use an int >= 1")
    bound, bound_from = _tolerance(tolerance)

    from .blame import blame, reference_tflite
    from .checks import _expected
    from .converter import convert
    from .runner import TFLiteRunner

    if reference is None:
        reference = source
        if isinstance(source, (str, os.PathLike)):  # a SavedModel: its float .tflite
            reference = TFLiteRunner(
                convert(
                    source, mode="float", cache_dir=cache_dir, converter_options=converter_options
                )
            )
    expected = _expected(reference, x)

    def measure_set(keep: tuple[str, ...]) -> tuple[float, bytes]:
        content = convert(
            source,
            representative_data,
            mode="int8",
            cache_dir=cache_dir,
            via=via,
            converter_options=converter_options,
            keep_float=list(keep) or None,
        )
        runner = TFLiteRunner(content, kernels=kernels or "xnnpack")
        return _error(runner(x), expected, name), content

    search = _Search(measure_set, bound, max_conversions)
    base = search.measure(set(), "int8, nothing kept float")
    if base is None:  # pragma: no cover - the budget is >= 1
        raise RuntimeError("no conversion budget")
    ops = search.ops = _Ops(search.contents[()])
    result = FloatSuggestion(None, name, bound, bound_from, len(ops.ops), max_layers)
    result.steps = search.steps
    kept = {ops.by_tensor[name] for name in begin if name in ops.by_tensor}
    first = base
    if kept and not base.passed:
        first = search.measure(kept, "the runner's keep_float") or base
        kept = kept if first is not base else set()
    if base.passed:
        result.keep_float = ()
    elif first.passed:
        result.keep_float = _prune(search, ops, kept)
    else:
        float_ref = reference_tflite(source, cache_dir, converter_options)
        search.conversions += 1  # the float reference blame compares against
        xb = _first(x, BLAME_SAMPLES)
        found, result.stopped = _greedy(search, ops, float_ref, xb, max_layers, blame, kept)
        if found is not None:
            result.keep_float = _prune(search, ops, found)
    result.conversions = search.conversions
    result.seconds = time.monotonic() - start
    return result


def _greedy(
    search: _Search,
    ops: _Ops,
    float_ref: bytes,
    x: Any,
    max_layers: int,
    blame: Callable[..., Any],
    start: set[int],
) -> tuple[set[int] | None, str]:
    """Grow the set of float ops, from ``start``, along blame until the bound is met:
    (the set, ``""``), or (``None``, why the search stopped)."""
    kept = set(start)
    current = search.seen[ops.names(kept)]
    tried: set[frozenset[int]] = set()
    fruitless = 0
    while True:
        rows = blame(search.contents[ops.names(kept)], float_ref, x)
        step_taken = False
        for row in rows:
            if not (row.added > 0) or ops.by_tensor.get(row.layer) in kept:
                continue
            if fruitless >= PATIENCE:
                return None, (
                    f"stopped: the candidates of the {PATIENCE} most blamed tensors left "
                    f"each gain under {MIN_GAIN:.0%} of the gap to the bound"
                )
            best: tuple[SearchStep, set[int]] | None = None
            for why, group in ops.groups(row.layer):
                candidate = kept | group
                if len(candidate) > max_layers or frozenset(candidate) in tried:
                    continue
                tried.add(frozenset(candidate))
                step = search.measure(candidate, why)
                if step is None:
                    return None, f"stopped after {search.conversions} conversions (max_conversions)"
                if step.passed:
                    return candidate, ""
                if best is None or step.error < best[0].error:
                    best = (step, candidate)
            gain = current.error - search.bound
            if best is not None and best[0].error <= current.error - MIN_GAIN * gain:
                current, kept, step_taken, fruitless = best[0], best[1], True, 0
                break  # blame the new model: its worst tensor may have moved
            fruitless += best is not None
        if not step_taken:
            return None, "no blamed op or tensor left to try within max_layers"


def _prune(search: _Search, ops: _Ops, found: set[int]) -> tuple[str, ...]:
    """Drop the ops the bound does not need, one at a time (the latest in the graph first)."""
    kept = set(found)
    for index in sorted(found, reverse=True):
        if len(kept) == 1:
            break
        trial = kept - {index}
        step = search.measure(trial, f"pruned: without {short(ops.key[index][0])}")
        if step is None:
            break
        if step.passed:
            kept = trial
    return ops.names(kept)
