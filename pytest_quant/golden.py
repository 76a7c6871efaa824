"""Golden outputs on disk: one ``.npz`` per check plus a JSON sidecar, compared each run.

The sidecar records each array's dtype, shape and sha256 (so a torn, truncated or
tampered file is a clear failure, never a pass), the outputs' quantization parameters,
and a fingerprint of what produced them (TensorFlow, LiteRT, numpy and Python versions,
platform, interpreter options, the model's sha256, when). Writes go to a temp file in
the same directory and are renamed into place, so an interrupted run never leaves a
torn golden and parallel workers never read one.

Reading trusts nothing on disk: the sidecar's schema is checked first, then each
``.npy`` member's header (dtype, shape) and uncompressed size are checked against the
sidecar before a byte of data is inflated, so a forged header or a decompression bomb
is refused without allocating what it claims.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .qparams import QuantParams

FORMAT = 1

#: The largest array a golden may hold, in bytes; a bigger one is refused before loading.
MAX_ARRAY_BYTES = 1 << 30
#: The longest golden name (its files add ``.npz`` / ``.json`` and a temp-file prefix).
MAX_NAME_LENGTH = 128
_NAME_RE = re.compile(r"[A-Za-z0-9_\-+=,@()\[\]][A-Za-z0-9._\-+=,@()\[\]]*")
#: What a golden name may be, as error messages say it.
NAME_RULE = (
    f"1 to {MAX_NAME_LENGTH} characters from A-Z a-z 0-9 . _ - + = , @ ( ) [ ], "
    "not starting with '.'"
)
_FIX = "rewrite it with pytest --quant-golden-update, or restore it from version control"
_FIX_MISSING = "run pytest --quant-golden-update to write it from this run's outputs"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DTYPE_RE = re.compile(r"(u?int|float)(8|16|32|64|96|128)")
# What a damaged archive raises while read (zipfile, zlib, numpy's header parser;
# RuntimeError: an encrypted member).
_CORRUPT = (OSError, ValueError, EOFError, zlib.error, NotImplementedError, RuntimeError)


class GoldenError(Exception):
    """A golden file is missing, corrupt, or does not match its sidecar.

    ``str(error)`` names the file, what is wrong and the fix; ``problem`` is the same
    without the fix; ``missing`` is true when the golden was never written.
    """

    def __init__(self, problem: str, *, missing: bool = False) -> None:
        super().__init__(f"{problem}; {_FIX_MISSING if missing else _FIX}")
        self.problem = problem
        self.missing = missing


def check_name(name: Any) -> str:
    """Return ``name`` if it can name a golden's files, else raise saying the rule.

    :raises TypeError: ``name`` is not a ``str``.
    :raises ValueError: ``name`` breaks :data:`NAME_RULE` (the message says how).

    Example::

        >>> check_name("mlp_int8[per-channel]")
        'mlp_int8[per-channel]'
    """
    if not isinstance(name, str):
        raise TypeError(f"name={name!r}: a golden name is a str of {NAME_RULE}")
    if len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name):
        return name
    shown = repr(name) if len(name) <= 60 else f"{name[:40]!r}..."
    bad = sorted({c for c in name if not _NAME_RE.fullmatch("a" + c)})
    if len(name) > MAX_NAME_LENGTH:
        why = f"it is {len(name)} characters long"
    elif bad:
        why = f"it contains {', '.join(repr(c) for c in bad[:10])}"
    else:
        why = "it is empty" if not name else "it starts with '.'"
    raise ValueError(f"name={shown}: a golden name must be a plain file name ({why}): {NAME_RULE}")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def fingerprint(*, runner: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced a set of outputs: library versions, platform, interpreter options,
    and the model's sha256 when a runner (or model bytes) is given."""
    tf = _version("tensorflow") or _version("tensorflow-cpu")
    fp: dict[str, Any] = {
        "tensorflow": tf,
        "ai_edge_litert": _version("ai-edge-litert"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
    }
    if runner is not None:
        content = getattr(runner, "content", runner)
        fp["model_sha256"] = hashlib.sha256(bytes(content)).hexdigest()
        if hasattr(runner, "options"):
            fp["interpreter"] = dict(runner.options)
    fp.update(extra or {})
    return fp


def describe_fingerprint(fp: dict[str, Any]) -> str:
    """``TF 2.18.1, LiteRT 1.2.0, numpy 1.26.4, xnnpack x1`` (what a reader scans for)."""
    parts = [
        f"TF {fp.get('tensorflow')}",
        f"LiteRT {fp.get('ai_edge_litert')}",
        f"numpy {fp.get('numpy')}",
        f"Python {fp.get('python')}",
        str(fp.get("platform")),
    ]
    if isinstance(fp.get("interpreter"), dict):
        opts = fp["interpreter"]
        parts.append(f"kernels {opts.get('kernels')} x{opts.get('num_threads')} threads")
    if "model_sha256" in fp:
        parts.append(f"model {str(fp['model_sha256'])[:12]}")
    return ", ".join(parts)


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _qp_json(qp: QuantParams) -> dict[str, Any]:
    return {
        "scale": np.asarray(qp.scale, np.float64).tolist(),
        "zero_point": np.asarray(qp.zero_point).tolist(),
        "dtype": qp.dtype,
        "axis": qp.axis,
    }


def qparams_from_json(d: dict[str, Any]) -> QuantParams:
    with np.errstate(over="ignore"):  # a scale beyond float32 becomes inf: QuantParams says so
        scale = np.asarray(d["scale"], np.float32)
    if d.get("axis") is None:
        return QuantParams(float(scale), int(d["zero_point"]), d["dtype"])
    return QuantParams(scale, np.asarray(d["zero_point"]), d["dtype"], d["axis"])


@dataclass(frozen=True)
class Golden:
    """A golden read back from disk and verified against its sidecar."""

    arrays: dict[str, np.ndarray]
    qparams: dict[str, QuantParams]
    fingerprint: dict[str, Any]
    written: str


def paths(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """The ``.npz`` and sidecar ``.json`` of golden ``name`` in ``directory``
    (``ValueError`` for a name that is not a plain file name: :func:`check_name`)."""
    check_name(name)
    return Path(directory) / f"{name}.npz", Path(directory) / f"{name}.json"


def _atomic(target: Path, write: Any) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(
    directory: str | os.PathLike[str],
    name: str,
    arrays: dict[str, np.ndarray],
    qparams: dict[str, QuantParams],
    fp: dict[str, Any],
) -> tuple[Path, Path]:
    """Write a golden atomically (arrays first, then the sidecar that vouches for them)."""
    npz, side = paths(directory, name)
    _atomic(npz, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
    meta = {
        "format": FORMAT,
        "arrays": {
            k: {"dtype": str(v.dtype), "shape": list(v.shape), "sha256": _digest(v)}
            for k, v in arrays.items()
        },
        "qparams": {k: _qp_json(qp) for k, qp in qparams.items()},
        "fingerprint": fp,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _atomic(side, lambda fh: fh.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    return npz, side


# --- reading: sidecar schema ------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _array_entry_problem(d: Any) -> str | None:
    """What is wrong with one ``arrays`` entry (``" is missing"``-style tail), or None."""
    if not isinstance(d, dict):
        return f" must be an object with dtype, shape and sha256, got {_short(d)}"
    for key in ("dtype", "shape", "sha256"):
        if key not in d:
            return f".{key} is missing"
    kind = None
    # numpy parses some dtype strings with ast: only plain names get that far
    if isinstance(d["dtype"], str) and _DTYPE_RE.fullmatch(d["dtype"]):
        with contextlib.suppress(TypeError):  # e.g. float96 where the platform has none
            kind = np.dtype(d["dtype"]).kind
    if kind is None or kind not in "iuf":
        return (
            f".dtype must name an integer or float dtype such as 'int8', got {_short(d['dtype'])}"
        )
    shape = d["shape"]
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        return f".shape must be a list of whole numbers >= 0, got {_short(shape)}"
    if not isinstance(d["sha256"], str) or not _SHA256_RE.fullmatch(d["sha256"]):
        return f".sha256 must be 64 lowercase hex digits, got {_short(d['sha256'])}"
    return None


def _qparams_entry_problem(d: Any) -> str | None:
    """What is wrong with one ``qparams`` entry (a tail as above), or None."""
    if not isinstance(d, dict):
        return f" must be an object with scale, zero_point, dtype and axis, got {_short(d)}"
    for key in ("scale", "zero_point", "dtype", "axis"):
        if key not in d:
            return f".{key} is missing"
    if not isinstance(d["dtype"], str):
        return f".dtype must be a string such as 'int8', got {_short(d['dtype'])}"
    if d["axis"] is None:
        if not _is_number(d["scale"]):
            return f".scale must be a number (axis is null), got {_short(d['scale'])}"
        if not _is_int(d["zero_point"]):
            return (
                f".zero_point must be a whole number (axis is null), got {_short(d['zero_point'])}"
            )
    elif not _is_int(d["axis"]):
        return f".axis must be null or a whole number, got {_short(d['axis'])}"
    else:
        scale, zp = d["scale"], d["zero_point"]
        if not isinstance(scale, list) or not scale or not all(map(_is_number, scale)):
            return f".scale must be a non-empty list of numbers (per channel), got {_short(scale)}"
        if not isinstance(zp, list) or not all(map(_is_int, zp)):
            return f".zero_point must be a list of whole numbers (per channel), got {_short(zp)}"
    try:
        qparams_from_json(d)
    except (TypeError, ValueError) as exc:
        return f": {exc}"
    return None


def sidecar_problem(meta: Any) -> str | None:
    """What is wrong with a parsed sidecar, naming the field, or ``None`` if it is sound.

    Example::

        >>> sidecar_problem({"format": 1, "arrays": {}})
        "field 'qparams' is missing"
    """
    if not isinstance(meta, dict):
        return f"holds {type(meta).__name__} {_short(meta)}, not a JSON object"
    if meta.get("format") != FORMAT:
        return f"has format {meta.get('format')!r}, expected {FORMAT}"
    for key, kind, what in (
        ("arrays", dict, "an object"),
        ("qparams", dict, "an object"),
        ("fingerprint", dict, "an object"),
        ("written", str, "a string"),
    ):
        if key not in meta:
            return f"field {key!r} is missing"
        if not isinstance(meta[key], kind):
            return f"field {key!r} must be {what}, got {_short(meta[key])}"
    for group, check in (("arrays", _array_entry_problem), ("qparams", _qparams_entry_problem)):
        for k in sorted(meta[group]):
            tail = check(meta[group][k])
            if tail is not None:
                return f"field {group}[{k!r}]{tail}"
    interpreter = meta["fingerprint"].get("interpreter")
    if interpreter is not None and not isinstance(interpreter, dict):
        return f"field fingerprint.interpreter must be an object, got {_short(interpreter)}"
    return None


def _read_sidecar(side: Path) -> dict[str, Any]:
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError: a ValueError
        raise GoldenError(f"golden sidecar {side} is corrupt: {exc}") from None
    problem = sidecar_problem(meta)
    if problem is not None:
        sep = " " if problem.startswith("has format") else ": "
        raise GoldenError(f"golden sidecar {side}{sep}{problem}")
    return meta  # type: ignore[no-any-return]


# --- reading: the archive, checked before it is inflated ---------------------------------


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.4g} MiB"


def _read_member(npz: Path, fh: Any, size: int, key: str, d: dict[str, Any]) -> np.ndarray:
    """One ``.npy`` member (``fh``: its open zip stream, ``size``: its uncompressed size):
    header and size checked against the sidecar, then loaded."""
    want = f"{d['dtype']}{d['shape']}"
    nbytes = math.prod(d["shape"]) * np.dtype(d["dtype"]).itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise GoldenError(
            f"golden file {npz}: array {key!r} would take {_mib(nbytes)} ({want} in its "
            f"sidecar); arrays over {_mib(MAX_ARRAY_BYTES)} "
            "(pytest_quant.golden.MAX_ARRAY_BYTES) are refused without loading"
        )
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"array {key!r} has .npy format {version}, not 1.0 or 2.0")
    if dtype.hasobject:  # what np.load(allow_pickle=False) refuses
        raise ValueError(f"array {key!r} holds Python objects (pickled data), never loaded")
    if str(dtype) != d["dtype"] or list(shape) != d["shape"]:
        raise GoldenError(
            f"golden file {npz}: array {key!r} is {dtype}{list(shape)}, its sidecar says {want}"
        )
    held = size - fh.tell()
    if held != nbytes:
        raise GoldenError(
            f"golden file {npz}: array {key!r} ({want}) needs {nbytes} bytes of data, its "
            f"archive member holds {held} (corrupt, or a decompression bomb); refused "
            "without loading"
        )
    buf = bytearray(nbytes)
    if fh.readinto(buf) != nbytes or fh.read(1):  # reading to the end checks the CRC
        raise EOFError(f"array {key!r} ends early")
    return np.frombuffer(buf, dtype).reshape(shape, order="F" if fortran else "C")


def _read_arrays(npz: Path, described: dict[str, Any]) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(npz):
        raise GoldenError(f"golden file {npz} is corrupt: BadZipFile: not an .npz (zip) archive")
    try:
        with zipfile.ZipFile(npz) as zf:
            names = zf.namelist()
            members = {m.filename.removesuffix(".npy"): m for m in zf.infolist()}
            if len(members) != len(names) or set(members) != set(described):
                raise GoldenError(
                    f"golden file {npz} holds {sorted(m.removesuffix('.npy') for m in names)}, "
                    f"its sidecar lists {sorted(described)}"
                )
            arrays = {}
            for key in sorted(described):
                with zf.open(members[key]) as fh:
                    size = members[key].file_size
                    arrays[key] = _read_member(npz, fh, size, key, described[key])
    except (*_CORRUPT, zipfile.BadZipFile) as exc:
        raise GoldenError(f"golden file {npz} is corrupt: {type(exc).__name__}: {exc}") from None
    return arrays


def _verify(npz: Path, key: str, arr: np.ndarray, d: dict[str, Any]) -> None:
    if _digest(arr) != d["sha256"]:
        raise GoldenError(f"golden file {npz}: array {key!r} fails its sha256 check (tampered?)")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise GoldenError(
                f"golden file {npz}: array {key!r} holds {int(bad.sum())} NaN/Inf value(s) "
                f"(first at index {first}); goldens are never written with them"
            )


def read(directory: str | os.PathLike[str], name: str) -> Golden:
    """Read and verify a golden; ``GoldenError`` names the file, what is wrong and the fix.

    Example::

        golden = read("golden/test_model", "mlp_int8")
        golden.arrays["output"], golden.qparams["output"]
    """
    npz, side = paths(directory, name)
    if not npz.is_file() or not side.is_file():
        missing = [str(p) for p in (npz, side) if not p.is_file()]
        raise GoldenError(
            f"golden {name!r} is missing: {', '.join(missing)} not found",
            missing=len(missing) == 2,
        )
    meta = _read_sidecar(side)
    described = meta["arrays"]
    arrays = _read_arrays(npz, described)
    for key, arr in arrays.items():
        _verify(npz, key, arr, described[key])
    qps = {k: qparams_from_json(v) for k, v in meta["qparams"].items()}
    return Golden(arrays, qps, meta["fingerprint"], meta["written"])
