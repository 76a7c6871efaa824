"""Golden outputs on disk: one ``.npz`` per check plus a JSON sidecar, compared each run.

The sidecar records each array's dtype, shape and sha256 (so a torn, truncated or
tampered file is a clear failure, never a pass), the outputs' quantization parameters,
and a fingerprint of what produced them (TensorFlow, LiteRT, numpy and Python versions,
platform, interpreter options, the model's sha256, when). Writes go to a temp file in
the same directory and are renamed into place, so an interrupted run never leaves a
torn golden and parallel workers never read one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .qparams import QuantParams

FORMAT = 1


class GoldenError(Exception):
    """A golden file is missing, corrupt, or does not match its sidecar."""


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
    if "interpreter" in fp:
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
    """The ``.npz`` and sidecar ``.json`` of golden ``name`` in ``directory``."""
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


def read(directory: str | os.PathLike[str], name: str) -> Golden:
    """Read and verify a golden; ``GoldenError`` names the file and what is wrong."""
    npz, side = paths(directory, name)
    if not npz.is_file() or not side.is_file():
        missing = [str(p) for p in (npz, side) if not p.is_file()]
        raise GoldenError(f"golden {name!r} is missing: {', '.join(missing)} not found")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        described = meta["arrays"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GoldenError(f"golden sidecar {side} is corrupt: {exc}") from None
    if meta.get("format") != FORMAT:
        raise GoldenError(
            f"golden sidecar {side} has format {meta.get('format')!r}, expected {FORMAT}"
        )
    if not zipfile.is_zipfile(npz):
        raise GoldenError(f"golden file {npz} is corrupt: BadZipFile: not an .npz (zip) archive")
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GoldenError(f"golden file {npz} is corrupt: {type(exc).__name__}: {exc}") from None
    if set(arrays) != set(described):
        raise GoldenError(
            f"golden file {npz} holds {sorted(arrays)}, its sidecar lists {sorted(described)}"
        )
    for key, arr in arrays.items():
        d = described[key]
        if str(arr.dtype) != d["dtype"] or list(arr.shape) != d["shape"]:
            raise GoldenError(
                f"golden file {npz}: array {key!r} is {arr.dtype}{list(arr.shape)}, "
                f"its sidecar says {d['dtype']}{d['shape']}"
            )
        if _digest(arr) != d["sha256"]:
            raise GoldenError(
                f"golden file {npz}: array {key!r} fails its sha256 check (tampered?)"
            )
    qps = {k: qparams_from_json(v) for k, v in meta.get("qparams", {}).items()}
    return Golden(arrays, qps, meta.get("fingerprint", {}), meta.get("written", "?"))
