from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from pytest_quant import QuantParams
from pytest_quant.golden import (
    MAX_NAME_LENGTH,
    NAME_RULE,
    GoldenError,
    check_name,
    describe_fingerprint,
    fingerprint,
    read,
    sidecar_problem,
    write,
)

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


# --- a corrupt or hostile golden fails naming the file and the fix, and never crashes ---

FIX = "rewrite it with pytest --quant-golden-update, or restore it from version control"


def _edit_sidecar(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _pop(*keys):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]

    return edit


def _set(*keys, value):
    def edit(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


SIDECAR_CASES = [
    (_pop("arrays"), "field 'arrays' is missing"),
    (_pop("qparams"), "field 'qparams' is missing"),
    (_pop("fingerprint"), "field 'fingerprint' is missing"),
    (_pop("written"), "field 'written' is missing"),
    (_set("arrays", value=[1]), "field 'arrays' must be an object, got [1]"),
    (_set("qparams", value=[1]), "field 'qparams' must be an object, got [1]"),
    (_set("fingerprint", value="x"), "field 'fingerprint' must be an object, got 'x'"),
    (_set("written", value=3), "field 'written' must be a string, got 3"),
    (_pop("arrays", "logits", "sha256"), "field arrays['logits'].sha256 is missing"),
    (_pop("arrays", "prob", "dtype"), "field arrays['prob'].dtype is missing"),
    (_set("arrays", "logits", value=7), "field arrays['logits'] must be an object with dtype"),
    (
        _set("arrays", "logits", "shape", value="2,5"),
        "field arrays['logits'].shape must be a list of whole numbers >= 0, got '2,5'",
    ),
    (
        _set("arrays", "logits", "shape", value=[2, -5]),
        "field arrays['logits'].shape must be a list of whole numbers >= 0",
    ),
    (
        _set("arrays", "logits", "dtype", value="object"),
        "field arrays['logits'].dtype must name an integer or float dtype such as 'int8', "
        "got 'object'",
    ),
    (
        _set("arrays", "logits", "dtype", value=["int8"]),
        "field arrays['logits'].dtype must name an integer or float dtype",
    ),
    (
        _set("arrays", "logits", "sha256", value=None),
        "field arrays['logits'].sha256 must be 64 lowercase hex digits, got None",
    ),
    (_pop("qparams", "logits", "scale"), "field qparams['logits'].scale is missing"),
    (_pop("qparams", "logits", "axis"), "field qparams['logits'].axis is missing"),
    (
        _set("qparams", "logits", "scale", value=[0.25]),
        "field qparams['logits'].scale must be a number (axis is null), got [0.25]",
    ),
    (
        _set("qparams", "logits", "zero_point", value="3"),
        "field qparams['logits'].zero_point must be a whole number (axis is null), got '3'",
    ),
    (
        _set("qparams", "logits", "axis", value=0),
        "field qparams['logits'].scale must be a non-empty list of numbers (per channel)",
    ),
    (_set("qparams", "logits", "dtype", value="int4"), "field qparams['logits']: dtype='int4'"),
    (_set("qparams", "logits", "scale", value=-1.0), "field qparams['logits']: "),
    (
        _set("fingerprint", value={"interpreter": "xnnpack"}),
        "field fingerprint.interpreter must be an object, got 'xnnpack'",
    ),
]


@pytest.mark.parametrize("edit, problem", SIDECAR_CASES)
def test_sidecar_schema_errors_name_the_file_the_field_and_the_fix(tmp_path, edit, problem):
    write(tmp_path, "g", ARRAYS, QPS, fingerprint())
    side = tmp_path / "g.json"
    _edit_sidecar(side, edit)
    with pytest.raises(GoldenError) as info:
        read(tmp_path, "g")
    assert str(info.value).startswith(f"golden sidecar {side}: {problem}")
    assert str(info.value).endswith(FIX)


def test_sidecar_that_is_not_an_object(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    (tmp_path / "g.json").write_text("[1, 2]")
    with pytest.raises(GoldenError, match=r"g\.json: holds list \[1, 2\], not a JSON object"):
        read(tmp_path, "g")


def test_sidecar_problem_is_none_for_what_write_writes(tmp_path):
    write(tmp_path, "g", ARRAYS, {**QPS, "pc": QuantParams([0.5, 0.25], [0, 1], "int8", 0)}, {})
    assert sidecar_problem(json.loads((tmp_path / "g.json").read_text())) is None
    assert sidecar_problem({"format": 1, "arrays": {}}) == "field 'qparams' is missing"


def _npy_header(shape, dtype):
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _raw_zip(members):
    """A zip of ``(name, deflated bytes, crc32, uncompressed size)`` members, written by
    hand so that a member may inflate to far more than the file holds."""
    out, central = io.BytesIO(), []
    for name, data, crc, size in members:
        offset = out.tell()
        fields = (20, 0, 8, 0, 0, crc, len(data), size, len(name), 0)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + data)
        central.append(
            struct.pack("<IH", 0x02014B50, 20)
            + struct.pack("<HHHHHIIIHHHHHII", *fields, 0, 0, 0, 0, offset)
            + name.encode()
        )
    start = out.tell()
    out.write(b"".join(central))
    n, size = len(central), out.tell() - start
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, size, start, 0))
    return out.getvalue()


def _deflated(chunks):
    """Raw deflate of the concatenated chunks, each compressed once and repeated."""
    parts, crc, size = [], 0, 0
    for data, times in chunks:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        parts.append((c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)) * times)
        for _ in range(times):  # full flushes make the repeats independent deflate blocks
            crc = zlib.crc32(data, crc)
        size += len(data) * times
    return b"".join(parts) + b"\x03\x00", crc, size  # an empty final block


def _stored(name, arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return (name, *_deflated([(buf.getvalue(), 1)]))


def test_header_claiming_a_huge_array_is_refused_before_loading(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    claim = _npy_header((10**12,), np.int8) + bytes(100)
    members = [("logits.npy", *_deflated([(claim, 1)])), _stored("prob.npy", ARRAYS["prob"])]
    (tmp_path / "g.npz").write_bytes(_raw_zip(members))
    with pytest.raises(GoldenError) as info:
        read(tmp_path, "g")  # was: MemoryError: Unable to allocate 909. GiB
    assert str(info.value) == (
        f"golden file {tmp_path / 'g.npz'}: array 'logits' is int8[1000000000000], its "
        f"sidecar says int8[2, 5]; {FIX}"
    )
    # ... and if the sidecar is edited to agree, the size cap refuses it
    _edit_sidecar(tmp_path / "g.json", _set("arrays", "logits", "shape", value=[10**12]))
    with pytest.raises(GoldenError, match=r"g\.npz: array 'logits' would take 9\.537e\+05 MiB"):
        read(tmp_path, "g")


GIB3 = 3 << 30


@pytest.mark.parametrize(
    "header_shape, problem",
    [
        pytest.param(
            (GIB3,), f"array 'logits' is int8[{GIB3}], its sidecar says int8[2, 5]", id="claims"
        ),
        pytest.param(
            (2, 5),
            f"array 'logits' (int8[2, 5]) needs 10 bytes of data, its archive member holds "
            f"{GIB3} (corrupt, or a decompression bomb); refused without loading",
            id="trailing",
        ),
    ],
)
def test_decompression_bomb_is_refused_without_inflating(tmp_path, header_shape, problem):
    """3 MiB on disk, 3 GiB of zeros inflated: the header and the member's size are
    checked against the sidecar first."""
    write(tmp_path, "g", ARRAYS, QPS, {})
    head = _npy_header(header_shape, np.int8)
    data, crc, size = _deflated([(head, 1), (bytes(1 << 24), GIB3 >> 24)])
    members = [("logits.npy", data, crc, size), _stored("prob.npy", ARRAYS["prob"])]
    (tmp_path / "g.npz").write_bytes(_raw_zip(members))
    assert (tmp_path / "g.npz").stat().st_size < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(GoldenError) as info:
            read(tmp_path, "g")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # nothing near 3 GiB was inflated
    assert str(info.value) == f"golden file {tmp_path / 'g.npz'}: {problem}; {FIX}"


def test_duplicate_and_unknown_members(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    logits = _stored("logits.npy", ARRAYS["logits"])
    (tmp_path / "g.npz").write_bytes(
        _raw_zip([logits, logits, _stored("prob.npy", ARRAYS["prob"])])
    )
    with pytest.raises(GoldenError, match=r"holds \['logits', 'logits', 'prob'\], its sidecar"):
        read(tmp_path, "g")


def test_corrupt_deflate_stream_is_a_clear_error(tmp_path):
    write(tmp_path, "g", ARRAYS, QPS, {})
    name, data, crc, size = _stored("logits.npy", ARRAYS["logits"])
    bad = data[:40] + bytes(b ^ 0xFF for b in data[40:60]) + data[60:]
    members = [(name, bad, crc, size), _stored("prob.npy", ARRAYS["prob"])]
    (tmp_path / "g.npz").write_bytes(_raw_zip(members))
    with pytest.raises(GoldenError, match=rf"g\.npz is corrupt: .*; {FIX}$"):
        read(tmp_path, "g")


def test_nan_in_a_float_golden_names_the_file(tmp_path):
    prob = ARRAYS["prob"].copy()
    prob[2] = np.nan
    write(tmp_path, "g", {**ARRAYS, "prob": prob}, QPS, {})  # checksum agrees: NaN on purpose
    with pytest.raises(GoldenError) as info:
        read(tmp_path, "g")
    assert str(info.value) == (
        f"golden file {tmp_path / 'g.npz'}: array 'prob' holds 1 NaN/Inf value(s) (first at "
        f"index (2,)); goldens are never written with them; {FIX}"
    )


def test_missing_golden_says_how_to_write_it(tmp_path):
    with pytest.raises(GoldenError) as info:
        read(tmp_path, "nope")
    assert info.value.missing
    assert str(info.value).endswith(
        "not found; run pytest --quant-golden-update to write it from this run's outputs"
    )
    write(tmp_path, "half", ARRAYS, QPS, {})
    (tmp_path / "half.json").unlink()
    with pytest.raises(GoldenError, match=rf"half\.json not found; {FIX}$") as info:
        read(tmp_path, "half")
    assert not info.value.missing  # half a golden is broken, not missing


@pytest.mark.parametrize(
    "name, why",
    [
        ("x" * 300, "it is 300 characters long"),
        ("a\0b", "it contains '\\x00'"),
        ("a/b", "it contains '/'"),
        ("a b:c", "it contains ' ', ':'"),
        (".hidden", "it starts with '.'"),
        ("", "it is empty"),
    ],
)
def test_names_are_checked_up_front_and_the_error_says_the_rule(tmp_path, name, why):
    for call in (
        lambda: write(tmp_path, name, ARRAYS, QPS, {}),
        lambda: read(tmp_path, name),
        lambda: check_name(name),
    ):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert f"a golden name must be a plain file name ({why}): {NAME_RULE}" in msg
    assert list(tmp_path.iterdir()) == []
    assert check_name("x" * MAX_NAME_LENGTH) == "x" * MAX_NAME_LENGTH
    assert check_name("mlp_int8[per-channel]=v2") == "mlp_int8[per-channel]=v2"
    with pytest.raises(TypeError, match="a golden name is a str"):
        check_name(3)
