"""Per-tensor blame: where a quantized model departs from its float reference.

Both ``.tflite`` models run in LiteRT with every intermediate tensor kept; tensors are
matched between the two graphs (by name first, then by position in the graph, with
QUANTIZE / DEQUANTIZE ops looked through), and each matched tensor gets its error
against the float tensor. Needs only the interpreter: a Keras or SavedModel reference is
converted to a float ``.tflite`` first (that step needs TensorFlow, and is cached).

Two figures per tensor answer two questions:

- ``rmse_per_scale``: the error accumulated up to this tensor, in steps of its own scale
  (about 0.29 = 1/sqrt(12) for a tensor that carries nothing but its own rounding).
- ``added``: what the op that produced it adds over its inputs: its RMS error as a
  fraction of the float tensor's full scale (its range, or its largest magnitude when
  that is larger), minus the largest such fraction among its inputs. Rows are ranked
  by it. Quantizing the model's inputs counts toward the op that reads them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .flatbuffer import Op, decode, read_model

#: ops that only move a tensor between float and integer: looked through when matching
_CASTS = frozenset({"QUANTIZE", "DEQUANTIZE"})
#: samples per interpreter run: bounds the memory of keeping every tensor
CHUNK = 32
HOW_TO_READ = (
    "one op with a large 'added' is the culprit; every row near 0.29 steps with small "
    "'added' is error accumulating over many ops, with no single culprit"
)


@dataclass(frozen=True)
class LayerError:
    """One tensor's error against the float reference (``layer`` is the tensor's name).

    ``rmse``, ``max_abs_error`` and ``mean_error`` are in the tensor's real units;
    ``scale`` is the quantized tensor's scale (``nan`` for a float tensor);
    ``rmse_per_scale`` is ``rmse / scale``; ``rmse_fs`` is ``rmse`` over the float
    tensor's full scale (its range, or its largest magnitude when larger); ``added`` is
    ``rmse_fs`` minus the largest ``rmse_fs`` of the op's inputs (``nan`` when unknown,
    e.g. from TF's QuantizationDebugger).
    """

    layer: str
    scale: float
    rmse: float
    rmse_per_scale: float
    max_abs_error: float
    mean_error: float
    op: str = ""
    rmse_fs: float = math.nan
    added: float = math.nan


class Blame(list):  # type: ignore[type-arg]
    """The rows of :func:`blame`, worst first (a list of :class:`LayerError`), with the
    tensors that could not be compared (``unmatched``) and the number of samples run."""

    def __init__(self, rows: list[LayerError], unmatched: list[str], samples: int) -> None:
        super().__init__(rows)
        self.unmatched = unmatched
        self.samples = samples

    def __str__(self) -> str:
        return "\n".join(self.table())

    def table(self, top: int | None = None) -> list[str]:
        """The rows as text lines (``top`` rows if given), and what was not matched."""
        lines = blame_table(self, top=top)
        if self.unmatched:
            shown = ", ".join(repr(n) for n in self.unmatched[:3])
            more = f" and {len(self.unmatched) - 3} more" if len(self.unmatched) > 3 else ""
            lines.append(
                f"  {len(self.unmatched)} tensor(s) of the quantized model have no "
                f"counterpart in the reference: {shown}{more}"
            )
        return lines


def blame_table(errors: list[LayerError], *, top: int | None = None) -> list[str]:
    """Lines of a table of layer errors, in the given order (``top`` rows if given)."""
    rows = errors[:top] if top else errors
    lines = [
        f"  {'added':>9}  {'rmse/scale':>10}  {'rmse':>10}  {'max |err|':>10}  "
        f"{'scale':>10}  {'op':<18} tensor"
    ]
    for e in rows:
        lines.append(
            f"  {_fmt(e.added, '9.2%')}  {_fmt(e.rmse_per_scale, '10.3f')}  {e.rmse:10.4g}  "
            f"{e.max_abs_error:10.4g}  {_fmt(e.scale, '10.4g')}  {e.op or '-':<18} {e.layer}"
        )
    if top and len(errors) > top:
        lines.append(f"  ... {len(errors) - top} more")
    return lines


def _fmt(v: float, spec: str) -> str:
    width = int(spec.split(".")[0])
    if math.isnan(v):  # not applicable: a float tensor has no scale
        return "-".rjust(width)
    return format(v, spec) if math.isfinite(v) else "inf".rjust(width)


class _Graph:
    """The main subgraph of one model: ops, who produces each tensor, aliases through
    QUANTIZE/DEQUANTIZE, and the model's inputs."""

    def __init__(self, content: bytes) -> None:
        model = read_model(content)
        self.ops = decode(model)
        g = model.subgraphs[0]
        self.inputs = [int(i) for i in (g.inputs if g.inputs is not None else [])]
        self.outputs = {int(i) for i in (g.outputs if g.outputs is not None else [])}
        self.producer: dict[int, Op] = {}
        self.consumers: dict[int, list[Op]] = {}
        self.names: dict[str, int] = {}
        for op in self.ops:
            for t in op.outputs:
                self.producer[t.index] = op
                if op.name not in _CASTS:
                    self.names.setdefault(t.name, t.index)
            for i in op.inputs:
                if i is not None:
                    self.consumers.setdefault(i.index, []).append(op)

    def used(self, index: int) -> bool:
        """Whether a tensor is read by an op or is a model output (a control-flow op's
        unused outputs, e.g. a WHILE loop's counters, hold nothing to compare)."""
        return index in self.outputs or bool(self.consumers.get(index))

    def settled(self, index: int) -> int:
        """The value tensor ``index`` takes after a QUANTIZE -> DEQUANTIZE pair that alone
        consumes it: in a float reference made from a QAT model, that pair is the fake
        quantization, and its output is what the quantized tensor stands for."""
        users = self.consumers.get(index, [])
        if len(users) == 1 and users[0].name == "QUANTIZE" and users[0].outputs:
            after = self.consumers.get(users[0].outputs[0].index, [])
            if len(after) == 1 and after[0].name == "DEQUANTIZE" and after[0].outputs:
                return after[0].outputs[0].index
        return index

    def source(self, index: int) -> int:
        """The tensor ``index`` carries, looking through QUANTIZE/DEQUANTIZE of activations."""
        seen = set()
        while index not in seen:
            seen.add(index)
            op = self.producer.get(index)
            if op is None or op.name not in _CASTS or not op.inputs or op.inputs[0] is None:
                return index
            if op.inputs[0].constant:  # DEQUANTIZE of a constant: a weight
                return index
            index = op.inputs[0].index
        return index

    def activations(self, op: Op) -> list[int]:
        """The op's non-constant inputs (as their source tensors)."""
        return [self.source(t.index) for t in op.inputs if t is not None and not t.constant]


def match(quant: _Graph, ref: _Graph) -> tuple[dict[int, int], list[str]]:
    """Quantized tensor index -> reference tensor index, and the names left unmatched.

    The model inputs match by position; op outputs by name, then by structure: an op of
    the same type whose (matched) activation inputs are the same tensors.
    """
    pairs: dict[int, int] = {}
    for qi, ri in zip(quant.inputs, ref.inputs, strict=False):
        pairs[quant.source(qi)] = ri
    claimed = set(pairs.values())
    for op in quant.ops:
        if op.name in _CASTS:
            continue
        for t in op.outputs:
            named = ref.names.get(t.name)
            # names like "StatefulPartitionedCall_1:0" recur across models: same op type too
            if named is not None and named not in claimed and ref.producer[named].name == op.name:
                pairs[t.index] = named
                claimed.add(named)
    by_inputs: dict[tuple[Any, ...], list[Op]] = {}
    for op in ref.ops:
        if op.name not in _CASTS:
            by_inputs.setdefault((op.name, *ref.activations(op)), []).append(op)
    unmatched = []
    for op in quant.ops:
        if op.name in _CASTS or all(t.index in pairs for t in op.outputs):
            continue
        ins = [pairs.get(i) for i in quant.activations(op)]
        candidates = [] if None in ins else by_inputs.get((op.name, *ins), [])
        found = next(
            (c for c in candidates if not any(t.index in claimed for t in c.outputs)), None
        )
        if found is None or len(found.outputs) != len(op.outputs):
            unmatched += [t.name for t in op.outputs if t.index not in pairs]
            continue
        for t, r in zip(op.outputs, found.outputs, strict=True):
            pairs[t.index] = r.index
            claimed.add(r.index)
    return pairs, unmatched


@dataclass
class _Acc:
    """Running error statistics of one tensor over the chunks of a batch."""

    n: int = 0
    nonfinite: int = 0
    sq: float = 0.0
    total: float = 0.0
    max_abs: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    ref_max_abs: float = 0.0

    def add(self, actual: np.ndarray, reference: np.ndarray) -> None:
        err = actual.astype(np.float64) - reference.astype(np.float64)
        bad = ~np.isfinite(err)
        if bad.any():  # NaN/Inf in the quantized model: never averaged away
            self.nonfinite += int(bad.sum())
            err = np.where(bad, np.inf, err)
        self.n += err.size
        self.sq += float(np.sum(err * err))
        self.total += float(np.sum(err))
        if err.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(err))))
            self.lo = min(self.lo, float(np.min(reference)))
            self.hi = max(self.hi, float(np.max(reference)))
            self.ref_max_abs = max(self.ref_max_abs, float(np.max(np.abs(reference))))

    @property
    def rmse(self) -> float:
        if self.nonfinite:
            return math.inf
        return math.sqrt(self.sq / self.n) if self.n else math.nan

    @property
    def full_scale(self) -> float:
        """The reference's range, or its largest magnitude when that is larger; 1.0 if
        all zero. The magnitude floor keeps a near-constant tensor (a LayerNorm variance
        of 0.99999 +- 4e-7, measured in ConvNeXt) from ranking first on an error a
        fraction of a step wide; for a tensor whose range spans 0 nothing changes."""
        return max(self.hi - self.lo, self.ref_max_abs) or 1.0


def _dequantized(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray | None:
    """A tensor's value in real units, or ``None`` when it is not numeric."""
    kind = value.dtype.kind
    if kind == "f":
        return value
    if kind not in "iu":
        return None
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float64)
    if scales.size == 0:
        return value.astype(np.float64)  # token ids, indices: compared as they are
    zeros = np.asarray(q.get("zero_points", np.zeros_like(scales)), np.float64)
    if scales.size > 1:
        shape = [1] * value.ndim
        shape[int(q.get("quantized_dimension", 0))] = scales.size
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    with np.errstate(invalid="ignore", over="ignore"):  # a broken scale: NaN/Inf, ranked
        return (value.astype(np.float64) - zeros) * scales


def _scale(detail: dict[str, Any]) -> float:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []))
    if scales.size == 0 or np.dtype(detail["dtype"]).kind not in "iu":
        return math.nan
    return float(np.max(scales))


def _chunks(x: Any, n: int, size: int) -> Iterator[Any]:
    for start in range(0, n, size):
        part = slice(start, start + size)
        if isinstance(x, dict):
            yield {k: np.asarray(v)[part] for k, v in x.items()}
        elif isinstance(x, (list, tuple)):
            yield [np.asarray(v)[part] for v in x]
        else:
            yield np.asarray(x)[part]


def _batch_size(x: Any) -> int:
    first = (
        next(iter(x.values()))
        if isinstance(x, dict)
        else (x[0] if isinstance(x, (list, tuple)) else x)
    )
    arr = np.asarray(first)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"blame needs a batch of inputs (n, ...), got shape {arr.shape}")
    return int(arr.shape[0])


def layer_errors(
    quantized: Any,
    x: Any,
    *args: Any,
    reference: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    chunk: int = CHUNK,
    converter_options: Mapping[str, Any] | None = None,
) -> Blame:
    """Per-tensor error of a quantized model against its float reference, worst first.

    :param quantized: the quantized model: a runner, a ``.tflite`` path or bytes (from
        any tool: the TF converter, TFMOT QAT, ai-edge-quantizer...).
    :param x: float inputs, a batch (an array, a list in input order or a dict by name).
    :param reference: the float model: a ``.tflite`` path or bytes (needs only the LiteRT
        interpreter), or a Keras model (Keras 3 or tf_keras) or SavedModel directory,
        converted to a float ``.tflite`` without optimizations (needs TensorFlow; cached
        in ``cache_dir``, with ``converter_options`` when the model needs them, e.g.
        an LSTM's tensor-list settings).
    :returns: a :class:`Blame` (a list of :class:`LayerError` ranked by ``added``);
        ``.table(top=5)`` formats it.

    The call of earlier versions, ``layer_errors(source, representative_data,
    debug_data)``, still runs TF's QuantizationDebugger on ``source`` converted to int8
    (each layer's output against the float op on the same inputs: its local error).

    Example::

        errors = layer_errors("model_int8.tflite", x_test[:64], reference="model.tflite")
        print("\n".join(errors.table(top=5)))
    """
    if args:
        if len(args) != 1 or reference is not None:
            raise TypeError(
                "layer_errors(quantized, x, *, reference=...) or the QuantizationDebugger "
                "form layer_errors(source, representative_data, debug_data)"
            )
        from .debugger import debugger_layer_errors

        return Blame(debugger_layer_errors(quantized, x, args[0]), [], 0)
    if reference is None:
        raise TypeError(
            "layer_errors needs reference=: the float model (.tflite path or bytes, Keras "
            "model or SavedModel directory)"
        )
    from .flatbuffer import read_tflite

    content = read_tflite(quantized)
    return blame(content, reference_tflite(reference, cache_dir, converter_options), x, chunk=chunk)


def reference_tflite(
    reference: Any,
    cache_dir: str | os.PathLike[str] | None = None,
    converter_options: Mapping[str, Any] | None = None,
) -> bytes:
    """The float ``.tflite`` bytes of ``reference`` (converted when it is a Keras model or
    a SavedModel directory)."""
    from .flatbuffer import is_tflite_source, read_tflite

    if is_tflite_source(reference) or hasattr(reference, "content"):
        return read_tflite(reference)
    from .converter import convert

    return convert(
        reference, mode="float", cache_dir=cache_dir, converter_options=converter_options
    )


def blame(quantized: bytes, reference: bytes, x: Any, *, chunk: int = CHUNK) -> Blame:
    """Compare ``quantized`` with the float ``reference`` model tensor by tensor on ``x``.

    Both are ``.tflite`` bytes; ``x`` is a float batch (an array, a list in the model's
    input order, or a dict by input name). Runs in LiteRT alone (builtin kernels, every
    tensor kept), ``chunk`` samples at a time. Rows come worst first by ``added``.

    Example::

        result = blame(int8_bytes, float_bytes, x_test[:64])
        print("\\n".join(result.table(top=5)))
    """
    from .runner import TFLiteRunner

    runners = [
        TFLiteRunner(content, kernels="builtin", preserve_all_tensors=True)
        for content in (quantized, reference)
    ]
    qg, rg = _Graph(runners[0].content), _Graph(runners[1].content)
    pairs, unmatched = match(qg, rg)
    n = _batch_size(x)
    accs = {qi: _Acc() for qi in pairs if qi not in set(qg.inputs)}
    skipped: set[int] = set()
    for part in _chunks(x, n, max(1, chunk)):
        for r in runners:
            r.invoke(part)
        for qi, ri in pairs.items():
            if qi not in accs or qi in skipped:
                continue
            qv, rv = runners[0].tensor(qi), runners[1].tensor(rg.settled(ri))
            actual = _dequantized(qv, runners[0].tensor_detail(qi))
            expected = _dequantized(rv, runners[1].tensor_detail(rg.settled(ri)))
            if actual is None or expected is None or actual.shape != expected.shape:
                skipped.add(qi)
                continue
            accs[qi].add(actual, expected)
    fs: dict[int, float] = {}
    for qi, acc in accs.items():
        if qi not in skipped and acc.n:
            fs[qi] = acc.rmse / acc.full_scale
    rows = []
    for op in qg.ops:
        if op.name in _CASTS:
            continue
        inputs = [fs.get(i, 0.0) for i in qg.activations(op)]
        for t in op.outputs:
            if t.index not in fs or not qg.used(t.index):
                continue
            acc = accs[t.index]
            scale = _scale(runners[0].tensor_detail(t.index))
            rows.append(
                LayerError(
                    layer=t.name,
                    scale=scale,
                    rmse=acc.rmse,
                    rmse_per_scale=acc.rmse / scale if scale > 0 else math.nan,
                    max_abs_error=acc.max_abs,
                    mean_error=acc.total / acc.n,
                    op=op.name,
                    rmse_fs=fs[t.index],
                    added=_added(fs[t.index], inputs),
                )
            )
    unmatched += [f"{_name(qg, qi)} (not comparable: shape or type)" for qi in sorted(skipped)]
    rows.sort(key=lambda e: (-e.added, -e.rmse_fs))
    return Blame(rows, unmatched, n)


def _added(out: float, inputs: list[float]) -> float:
    """What an op adds over its worst input; non-finite error that came in is not added."""
    worst_in = max(inputs, default=0.0)
    if math.isinf(out) and math.isinf(worst_in):
        return 0.0
    return out - worst_in


def _name(graph: _Graph, index: int) -> str:
    op = graph.producer.get(index)
    for t in op.outputs if op else ():
        if t.index == index:
            return t.name
    return str(index)
