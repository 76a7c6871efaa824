from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_quant import QuantParams
from pytest_quant.golden import GoldenError, describe_fingerprint, fingerprint, read, write

ARRAYS = {"logits": np.arange(-5, 5, dtype=np.int8).reshape(2, 5), "prob": np.linspace(0, 1, 4)}
QPS = {"logits": QuantParams(0.25, -3, "int8")}


def test_round_trip(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, fingerprint(extra={"note": "x"}))
    g = read(tmp_path, "g")
    assert set(g.arrays) == {"logits", "prob"}
    np.testing.assert_array_equal(g.arrays["logits"], ARRAYS["logits"])
    assert g.qparams["logits"] == QPS["logits"]
    assert g.fingerprint["note"] == "x" and g.fingerprint["numpy"] == np.__version__
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["g.json", "g.npz"]  # no temp left


def test_str_paths_work(tmp_path):
    write(str(tmp_path), "s", ARRAYS, QPS, {})
    assert read(str(tmp_path), "s").qparams == QPS


def test_missing(tmp_path):
    with pytest.raises(GoldenError, match=r"golden 'nope' is missing: .*nope.npz"):
        read(tmp_path, "nope")


def test_bad_zip_is_a_clear_error(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(GoldenError, match=r"g\.npz is corrupt: BadZipFile"):
        read(tmp_path, "g")


def test_truncated_file_is_a_clear_error(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    data = (tmp_path / "g.npz").read_bytes()
    (tmp_path / "g.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(GoldenError, match="is corrupt"):
        read(tmp_path, "g")


def test_tampered_values_fail_the_checksum(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    np.savez(tmp_path / "g.npz", logits=ARRAYS["logits"] + 1, prob=ARRAYS["prob"])
    with pytest.raises(GoldenError, match=r"array 'logits' fails its sha256 check"):
        read(tmp_path, "g")


def test_wrong_dtype_is_caught(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    np.savez(tmp_path / "g.npz", logits=ARRAYS["logits"].astype(np.int16), prob=ARRAYS["prob"])
    with pytest.raises(GoldenError, match=r"'logits' is int16\[2, 5\], its sidecar says int8"):
        read(tmp_path, "g")


def test_pickled_object_arrays_are_refused(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    np.savez(tmp_path / "g.npz", logits=np.array([{"evil": 1}], dtype=object), prob=ARRAYS["prob"])
    with pytest.raises(GoldenError, match="is corrupt: ValueError"):  # allow_pickle=False
        read(tmp_path, "g")


def test_corrupt_sidecar(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(GoldenError, match=r"g\.json is corrupt"):
        read(tmp_path, "g")
    (tmp_path / "g.json").write_text(json.dumps({"format": 99, "arrays": {}}))
    with pytest.raises(GoldenError, match="format 99"):
        read(tmp_path, "g")


def test_fingerprint_description():
    fp = {
        "tensorflow": "2.18.1",
        "ai_edge_litert": "1.2.0",
        "numpy": "1.26.4",
        "python": "3.11.7",
        "platform": "linux-x86_64",
        "interpreter": {"kernels": "xnnpack", "num_threads": 1},
        "model_sha256": "abcdef0123456789",
    }
    assert describe_fingerprint(fp) == (
        "TF 2.18.1, LiteRT 1.2.0, numpy 1.26.4, Python 3.11.7, linux-x86_64, "
        "kernels xnnpack x1 threads, model abcdef012345"
    )
