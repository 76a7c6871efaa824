"""Run a TFLite model on float batches with the LiteRT interpreter.

Inputs are quantized with saturation (never wrap-around) when the model takes integers;
outputs come back dequantized, or raw with :meth:`TFLiteRunner.quantized`. A batch runs
in as few invocations as its activation memory allows (``batch_size``): the input tensor
is resized to a chunk, not per sample, and the chunks' outputs are concatenated.

The bytes are checked (:func:`~pytest_quant.tflite.flatbuffer.read_model`) before LiteRT
sees them, and whatever LiteRT then refuses to load, allocate or run is reported as a
:class:`~pytest_quant.tflite.flatbuffer.MalformedModelError` naming the source.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import as_float_array
from ..affine import dequantize, quantize
from ..qparams import QuantParams
from ._deps import require
from .flatbuffer import MalformedModelError, read_model, read_tflite, schema, source_name

#: Interpreter kernels: XNNPACK (LiteRT's default CPU delegate), the builtin optimized
#: kernels without it, or the reference kernels (slow; an oracle).
KERNELS = ("xnnpack", "builtin", "reference")
#: The default ``batch_size`` keeps a model's activation tensors (all of them, as if none
#: shared memory: an upper bound of LiteRT's arena) within this many bytes per invocation.
ACTIVATION_BUDGET = 64 << 20
_ITEMSIZE = {"FLOAT64": 8, "INT64": 8, "UINT64": 8, "COMPLEX64": 8, "COMPLEX128": 16}
_ITEMSIZE |= {"FLOAT16": 2, "INT16": 2, "UINT16": 2, "BFLOAT16": 2}
_ITEMSIZE |= {"INT8": 1, "UINT8": 1, "BOOL": 1, "INT4": 1, "INT2": 1, "UINT4": 1}


class Outputs(dict):  # type: ignore[type-arg]
    """Model outputs by name, in the model's output order; an int index works too."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _qparams(detail: Mapping[str, Any]) -> QuantParams | None:
    q = detail.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []))
    if scales.size == 0 or np.dtype(detail["dtype"]).kind not in "iu":
        return None
    zeros = np.asarray(q["zero_points"])
    dtype = np.dtype(detail["dtype"]).name
    if scales.size == 1:
        return QuantParams(float(scales[0]), int(zeros[0]), dtype)
    return QuantParams(scales.astype(np.float32), zeros, dtype, int(q["quantized_dimension"]))


class TFLiteRunner:
    """A LiteRT interpreter around one model, with explicit, recorded options.

    :param content: the ``.tflite`` bytes, or the path of a ``.tflite`` file.
    :param kernels: ``"xnnpack"`` (default delegate), ``"builtin"`` (optimized kernels,
        no delegate) or ``"reference"`` (reference kernels, an oracle).
    :param num_threads: interpreter threads.
    :param preserve_all_tensors: keep every intermediate tensor readable after a run
        (what per-tensor blame needs; more memory, and with XNNPACK the delegated
        tensors are still not kept, so blame uses ``kernels="builtin"``).
    :param batch_size: the most samples one invocation runs: a larger batch runs in
        chunks of this size (the last one smaller) whose outputs are concatenated, with
        activation memory bounded by the chunk. ``None`` (the default): as many as keep
        the model's activation tensors within :data:`ACTIVATION_BUDGET` (64 MiB), at
        least 1; read it as ``runner.batch_size``. Splitting needs the batch first in
        every input and output. The outputs are bit for bit one invocation's with XNNPACK
        and with integer kernels; LiteRT's builtin float kernels sum a row differently
        by its place in the batch, so there float outputs can differ in their last bits
        (as between any two batch sizes).
    :raises MalformedModelError: (a ``ValueError``) bytes that are not a well-formed
        model, or that LiteRT cannot load, allocate or run; the message names the source.

    Example::

        runner = TFLiteRunner(content)
        y = runner(x_test)              # dequantized float outputs
        q = runner.quantized(x_test)    # raw int8 outputs
        runner.output_qparams           # QuantParams of the output
        TFLiteRunner(content, batch_size=16)(x_test)  # 16 samples per invocation
    """

    def __init__(
        self,
        content: bytes | str | os.PathLike[str],
        *,
        kernels: str = "xnnpack",
        num_threads: int = 1,
        preserve_all_tensors: bool = False,
        batch_size: int | None = None,
    ) -> None:
        if kernels not in KERNELS:
            raise ValueError(f"kernels={kernels!r}: use one of {', '.join(KERNELS)}")
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads={num_threads!r} must be an int >= 1")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size={batch_size!r} must be an int >= 1 (samples per invocation), "
                "or None to bound activation memory by itself"
            )
        self.content = read_tflite(content)
        #: how messages name the model: its path, or "the model bytes"
        self.source = source_name(content)
        model = read_model(self.content, self.source)  # LiteRT never sees malformed bytes
        self.options: dict[str, Any] = {"kernels": kernels, "num_threads": num_threads}
        if preserve_all_tensors:
            self.options["preserve_all_tensors"] = True
        if batch_size is not None:
            self.options["batch_size"] = batch_size
        #: the most samples one invocation runs (see the ``batch_size`` parameter)
        self.batch_size = batch_size or max(1, ACTIVATION_BUDGET // _activation_bytes(model))
        lite = require("ai_edge_litert.interpreter")
        resolver = {
            "xnnpack": lite.OpResolverType.AUTO,
            "builtin": lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            "reference": lite.OpResolverType.BUILTIN_REF,
        }[kernels]
        try:
            with warnings.catch_warnings():  # LiteRT warns that preserving is for debugging
                warnings.simplefilter("ignore", UserWarning)
                self._it = lite.Interpreter(
                    model_content=self.content,
                    num_threads=num_threads,
                    experimental_op_resolver_type=resolver,
                    experimental_preserve_all_tensors=preserve_all_tensors,
                )
            self._it.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            hint = _load_hint(str(exc))
            if hint:  # a well-formed model that needs kernels this interpreter lacks
                raise ValueError(f"LiteRT cannot load this model: {exc}{hint}") from None
            problem = f"LiteRT cannot load it: {_said(exc)}"
            raise MalformedModelError(self.source, problem, _LITERT_FIX) from None
        try:
            self._inputs = self._it.get_input_details()
            self._outputs = self._it.get_output_details()
            self._names = self._signature_names()
        except (RuntimeError, ValueError, TypeError) as exc:  # UnicodeDecodeError included
            problem = f"LiteRT cannot describe its inputs and outputs: {_said(exc)}"
            raise MalformedModelError(self.source, problem) from None
        self._shapes = {d["index"]: tuple(int(s) for s in d["shape"]) for d in self._inputs}
        self._origin: Origin | None = None

    @property
    def origin(self) -> Origin | None:
        """Where the model came from (``quant_tflite`` records it): the float source is
        the default reference of :meth:`layer_errors`."""
        return self._origin

    @origin.setter
    def origin(self, value: Any) -> None:  # an Origin, or (source, representative_data)
        self._origin = value if value is None or isinstance(value, Origin) else Origin(*value)

    def _signature_names(self) -> dict[int, str]:
        """Tensor index -> the name users gave (the signature's keys), when there is one
        signature; else the tensor names."""
        names = {d["index"]: d["name"] for d in [*self._inputs, *self._outputs]}
        signatures = self._it.get_signature_list()
        if len(signatures) == 1:
            sig = self._it.get_signature_runner(next(iter(signatures)))
            for group in (sig.get_input_details(), sig.get_output_details()):
                for key, detail in group.items():
                    names[detail["index"]] = key
        return names

    @property
    def input_names(self) -> list[str]:
        """Input names in the model's input order (signature keys where available)."""
        return [self._names[d["index"]] for d in self._inputs]

    @property
    def output_names(self) -> list[str]:
        """Output names in the model's output order (signature keys where available)."""
        return [self._names[d["index"]] for d in self._outputs]

    def _qp(self, details: list[dict[str, Any]]) -> Any:
        qps = tuple(_qparams(d) for d in details)
        return qps[0] if len(qps) == 1 else qps

    @property
    def input_qparams(self) -> Any:
        """``QuantParams`` of the input (``None`` for a float input); a tuple for several."""
        return self._qp(self._inputs)

    @property
    def output_qparams(self) -> Any:
        """``QuantParams`` of the output (``None`` for a float output); a tuple for several."""
        return self._qp(self._outputs)

    def _values(self, x: Any) -> list[Any]:
        """``x`` as one value per input, in the interpreter's input order."""
        if isinstance(x, Mapping):
            unknown = set(x) - set(self.input_names)
            if unknown or len(x) != len(self._inputs):
                raise ValueError(
                    f"inputs by name must be exactly {self.input_names}, got {sorted(x)}"
                )
            values = [x[name] for name in self.input_names]
        elif isinstance(x, (list, tuple)) and len(self._inputs) > 1:
            values = self._in_interpreter_order(list(x))
        else:
            values = [x]
        if len(values) != len(self._inputs):
            raise ValueError(f"the model has {len(self._inputs)} inputs, got {len(values)}")
        return values

    def _feed(self, values: list[Any]) -> None:
        resized = False
        prepared = []
        for d, v in zip(self._inputs, values, strict=True):
            arr = self._prepare(d, v)
            if self._shapes[d["index"]] != arr.shape:
                self._resize(d["index"], arr.shape)
                resized = True
            prepared.append((d["index"], arr))
        if resized:
            try:
                self._it.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                shapes = ", ".join(str(arr.shape) for _, arr in prepared)
                problem = f"LiteRT cannot allocate its tensors for inputs of shape {shapes}"
                raise MalformedModelError(
                    self.source, f"{problem}: {_said(exc)}", _RESIZE_FIX
                ) from None
        for index, arr in prepared:
            self._it.set_tensor(index, arr)

    def _resize(self, index: int, shape: tuple[int, ...]) -> None:
        try:
            self._it.resize_tensor_input(index, shape)
        except (RuntimeError, ValueError) as exc:
            problem = f"LiteRT cannot resize input {self._names[index]!r} to {shape}"
            raise MalformedModelError(
                self.source, f"{problem}: {_said(exc)}", _RESIZE_FIX
            ) from None
        self._shapes[index] = shape

    def _invoke(self) -> None:
        try:
            self._it.invoke()
        except (RuntimeError, ValueError) as exc:
            shapes = ", ".join(str(s) for s in self._shapes.values())
            problem = f"LiteRT failed to run it on inputs of shape {shapes}: {_said(exc)}"
            fix = (
                "If the inputs are within the model's range (token ids within its vocabulary, "
                "indices within their tables), the bytes are corrupt: convert the model "
                "again, or restore the file"
            )
            raise MalformedModelError(self.source, problem, fix) from None

    def _in_interpreter_order(self, values: list[Any]) -> list[Any]:
        """A list follows the Keras model's input order when the runner was converted
        from one (the interpreter's order can differ), else the interpreter's."""
        from .calibration import keras_input_names

        names = keras_input_names(self.origin.source) if self.origin is not None else None
        if names is None or sorted(names) != sorted(self.input_names) or len(values) != len(names):
            return values
        given = dict(zip(names, values, strict=True))
        return [given[name] for name in self.input_names]

    def _prepare(self, detail: dict[str, Any], value: Any) -> np.ndarray:
        dtype = np.dtype(detail["dtype"])
        expected = tuple(int(s) for s in detail["shape"][1:])
        name = self._names[detail["index"]]
        if dtype.kind in "iu" and np.asarray(value).dtype == dtype:
            arr = np.asarray(value)  # already quantized codes, or the input's own ints
        elif dtype.kind in "iu" and _qparams(detail) is None:
            arr = _integer_input(value, dtype, name)  # token ids, indices
        else:
            arr = as_float_array(value, f"input {name!r}").astype(np.float32)
            qp = _qparams(detail)
            if qp is not None:
                arr = quantize(arr, qp)  # saturating, as the QUANTIZE op
            elif dtype.kind != "f":
                raise ValueError(f"input {name!r} is {dtype} without quantization")
        if tuple(arr.shape[1:]) != expected:
            raise ValueError(
                f"input {name!r} expects samples of shape {expected}, got a batch "
                f"of shape {arr.shape}; pass an array (batch, {', '.join(map(str, expected))})"
            )
        return np.ascontiguousarray(arr)

    def invoke(self, x: Any) -> None:
        """Run a batch as one invocation, whatever ``batch_size``, and keep the
        interpreter's tensors (see :meth:`tensor`)."""
        self._feed(self._values(x))
        self._invoke()

    def tensor(self, index: int) -> np.ndarray:
        """A copy of tensor ``index`` after :meth:`invoke` (intermediate tensors need
        ``preserve_all_tensors=True``)."""
        return np.array(self._it.get_tensor(index))

    def tensor_detail(self, index: int) -> dict[str, Any]:
        """LiteRT's details of tensor ``index``: name, dtype, quantization parameters."""
        return dict(self._it._get_tensor_details(index, 0))

    def quantized(self, x: Any) -> Any:
        """Run a batch (in chunks of at most ``batch_size`` samples); return the raw
        outputs (integer codes for a quantized output)."""
        values = self._values(x)
        n = _batch_length(values)
        if n is None or n <= self.batch_size:
            arrays = self._run(values)
        else:
            parts = [
                self._run(chunk, samples=samples)
                for chunk, samples in _chunks(values, n, self.batch_size)
            ]
            arrays = [np.concatenate(column) for column in zip(*parts, strict=True)]
        outs = Outputs(
            (self._names[d["index"]], arr) for d, arr in zip(self._outputs, arrays, strict=True)
        )
        return outs if len(outs) > 1 else outs[0]

    def _run(self, values: list[Any], *, samples: int | None = None) -> list[np.ndarray]:
        """One invocation; its outputs in output order. ``samples``: the samples of a chunk,
        which every output must have first (else the batch cannot be split)."""
        self._feed(values)
        self._invoke()
        outs = [self._it.get_tensor(d["index"]).copy() for d in self._outputs]
        for d, arr in zip(self._outputs, outs, strict=True):
            if samples is not None and (arr.ndim == 0 or arr.shape[0] != samples):
                raise ValueError(
                    f"output {self._names[d['index']]!r} has shape {arr.shape} for a chunk of "
                    f"{samples} samples: its first dimension is not the batch, so the batch "
                    f"cannot be split; pass batch_size= at least the batch's length"
                )
        return outs

    def __call__(self, x: Any) -> Any:
        """Run a batch; return float outputs (dequantized where the model's are integers)."""
        raw = self.quantized(x)
        many = isinstance(raw, Outputs)
        outs = Outputs()
        for d, arr in zip(self._outputs, raw.values() if many else [raw], strict=True):
            qp = _qparams(d)
            name = self._names[d["index"]]
            outs[name] = dequantize(arr, qp) if qp is not None else arr.astype(np.float32)
        return outs if many else outs[0]

    def layer_errors(self, x: Any, reference: Any = None) -> list[Any]:
        """Per-tensor error against a float reference on inputs ``x``, worst first.

        :param reference: the float model: a ``.tflite`` path or bytes, a Keras model or
            a SavedModel directory (converted to a float ``.tflite``, cached). ``None``:
            the float source this runner was converted from by ``quant_tflite``.

        See :func:`pytest_quant.tflite.layer_errors`.
        """
        from .blame import layer_errors

        if reference is None:
            if self.origin is None:
                raise ValueError(
                    "per-tensor blame needs the float reference: pass it, "
                    "runner.layer_errors(x, reference=float_model_or_tflite) (a float "
                    ".tflite works without TensorFlow)"
                )
            reference = self.origin.source
        origin = self.origin
        return layer_errors(
            self,
            x,
            reference=reference,
            cache_dir=origin.cache_dir if origin else None,
            converter_options=origin.converter_options if origin else None,
        )


def _activation_bytes(model: Any) -> int:
    """Bytes of the main subgraph's non-constant tensors for one sample (their stored
    shapes over the first input's stored batch); at least 1."""
    g = model.subgraphs[0]
    tensors = g.tensors or []
    names = {v: k for k, v in vars(schema().TensorType).items() if not k.startswith("_")}
    total = 0
    for t in tensors:
        buf = model.buffers[t.buffer]
        if (buf.data is not None and len(buf.data)) or getattr(buf, "offset", 0) > 1:
            continue  # a constant: loaded once, whatever the batch
        shape = [int(v) for v in (t.shape if t.shape is not None else [])]
        total += math.prod(shape) * _ITEMSIZE.get(names.get(t.type, ""), 4)
    inputs = [int(i) for i in (g.inputs if g.inputs is not None else [])]
    first = tensors[inputs[0]].shape if inputs else None
    batch = int(first[0]) if first is not None and len(first) and first[0] > 0 else 1
    return max(1, total // batch)


def _batch_length(values: list[Any]) -> int | None:
    """The samples in a batch: the first dimension every input shares (None: no such)."""
    lengths = {np.shape(v)[0] if np.ndim(v) else None for v in values}
    if len(lengths) != 1:
        return None
    return lengths.pop()


def _chunks(values: list[Any], n: int, size: int) -> Iterator[tuple[list[Any], int]]:
    """Consecutive slices of at most ``size`` samples of every input, with their length."""
    arrays = [np.asarray(v) for v in values]
    for start in range(0, n, size):
        stop = min(n, start + size)
        yield [a[start:stop] for a in arrays], stop - start


def _said(exc: BaseException) -> str:
    """LiteRT's message on one line (it joins its errors without separators)."""
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__


def _integer_input(value: Any, dtype: np.dtype, name: str) -> np.ndarray:
    """``value`` for a non-quantized integer input (token ids): cast to its dtype when no
    value changes, else a ``ValueError`` that says which."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise ValueError(
            f"input {name!r} takes {dtype} values (token ids or indices, not quantized), "
            f"got {arr.dtype} of shape {arr.shape}: pass a non-empty integer array"
        )
    cast = arr.astype(dtype)
    if not np.array_equal(cast, arr):
        info = np.iinfo(dtype)
        raise ValueError(
            f"input {name!r} takes {dtype} values (token ids or indices, not quantized): "
            f"the {arr.dtype} batch has values that {dtype} cannot hold exactly "
            f"(non-integral, or outside {info.min}..{info.max}; got {arr.min()}..{arr.max()})"
        )
    return cast


_FLEX = ("Select TensorFlow op", "Flex delegate")
_RESIZE_FIX = (
    "A model built for one batch size (a RESHAPE to a fixed shape) runs only that one: "
    "pass TFLiteRunner(..., batch_size=<that size>); otherwise the bytes are corrupt: "
    "convert the model again, or restore the file"
)
_LITERT_FIX = (
    "The flatbuffer reads well, but LiteRT refuses it: a corrupt file (convert the model "
    "again, or restore it), or parameters its kernels cannot run (assert_tflite_spec names "
    "spec violations; kernels='builtin' or 'reference' avoid XNNPACK's limits)"
)


def _load_hint(error: str) -> str:
    """Why LiteRT could not load a model, when its error says: Select TF (Flex) or custom
    ops, which this interpreter cannot run."""
    if any(s in error for s in _FLEX):
        return (
            "\nThe model has Select TensorFlow ops (converted with SELECT_TF_OPS): they need "
            "the Flex delegate, which ai-edge-litert does not ship, so this interpreter "
            "cannot run it. Convert without 'SELECT_TF_OPS' in "
            "converter_options['target_spec.supported_ops'] (for a Keras 3 LSTM/GRU: "
            "build it with unroll=True)"
        )
    if "unresolved custom op" in error:
        return (
            "\nThe model has custom ops (converted with allow_custom_ops): LiteRT runs "
            "them only with their kernels registered, which this runner does not do"
        )
    return ""


@dataclass(frozen=True)
class Origin:
    """What a runner was converted from (the float source is blame's default reference)."""

    source: Any
    representative_data: Any = None
    mode: str = "int8"
    cache_dir: str | None = None
    via: str = "saved_model"
    #: the converter settings it was converted with (the float reference uses them too)
    converter_options: Mapping[str, Any] | None = None
    #: the ops it keeps in float (``quant_tflite(..., keep_float=...)``): where
    #: ``suggest_float_layers`` starts its search
    keep_float: tuple[str, ...] | None = None
