"""quant_golden through pytest itself: missing, update, mismatch messages, corruption,
unused goldens, xdist."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_quant import QuantGolden
from pytest_quant.golden import NAME_RULE

SUITE = """
import numpy as np
from pytest_quant import QuantParams

SHIFT = {shift}

def test_codes(quant_golden):
    q = (np.arange(-64, 64, dtype=np.int16) + SHIFT).clip(-128, 127).astype(np.int8)
    quant_golden.check("codes", q.reshape(8, 16), qparams=QuantParams(0.05, 3, "int8"))

def test_floats(quant_golden):
    quant_golden.check("floats", {{"a": np.linspace(0, 1, 50) * (1 + SHIFT)}})
"""


def _suite(pytester, shift=0):
    pytester.makepyfile(test_model=SUITE.format(shift=shift))


def test_missing_golden_fails_and_says_how_to_create_it(pytester):
    _suite(pytester)
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=2)
    r.stdout.fnmatch_lines(
        [
            "*golden 'codes' is missing: *golden/test_model/codes.npz*not found; run pytest "
            "--quant-golden-update to write it from this run's outputs*"
        ]
    )


def test_update_writes_then_passes_and_reports(pytester):
    _suite(pytester)
    r = pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["*= quant goldens =*", "written: *codes.npz", "written: *floats.npz"])
    side = json.loads((pytester.path / "golden" / "test_model" / "codes.json").read_text())
    assert side["qparams"]["output"]["zero_point"] == 3 and "numpy" in side["fingerprint"]
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)
    assert "quant goldens" not in r.stdout.str()


def test_mismatch_message(pytester):
    _suite(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    _suite(pytester, shift=2)
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(failed=2)
    out = r.stdout.str()
    assert "golden 'codes' (" in out
    assert "output 'output': differs by up to 2 LSB, bound 1 LSB; 128 of 128 elements" in out
    assert "worst elements (index: now vs golden):" in out and "(0, 0): -62 vs -64" in out
    assert "histogram (now - golden in LSB): 2: 128" in out
    assert "golden written " in out and "this run:" in out and "TF " in out
    assert "bound from the default 1; change it with --quant-max-lsb" in out
    assert "pytest --quant-golden-update rewrites it" in out
    assert "output 'a': RMS error" in out
    r = pytester.runpytest("-p", "no:cacheprovider", "--quant-max-lsb=2")
    r.assert_outcomes(passed=1, failed=1)  # LSB budget is the option's; floats still off


def test_corrupt_golden_fails_naming_the_file(pytester):
    _suite(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    (pytester.path / "golden" / "test_model" / "codes.npz").write_bytes(b"garbage")
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*golden file *codes.npz is corrupt: BadZipFile*"])


def test_unused_goldens_reported_and_pruned_only_on_request(pytester):
    _suite(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    stale = pytester.path / "golden" / "test_model" / "old.npz"
    stale.write_bytes(b"x")
    (stale.with_suffix(".json")).write_text("{}")
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.stdout.fnmatch_lines(
        [
            "*unused (no test checked it): *old.npz",
            "*pytest --quant-golden-prune deletes unused goldens*",
        ]
    )
    assert stale.exists()
    r = pytester.runpytest("-p", "no:cacheprovider", "-k", "codes")
    assert "unused (no test checked it)" not in r.stdout.str()  # a partial run proves nothing
    r = pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-prune")
    r.stdout.fnmatch_lines(["*deleted (no test checked it): *old.npz"])
    assert not stale.exists() and not stale.with_suffix(".json").exists()


def test_xdist_creates_intact_goldens(pytester):
    body = "\n".join(
        f"def test_{i}(quant_golden):\n"
        f"    quant_golden.check('g{i}', np.arange({i}, {i} + 300, dtype=np.int16))\n"
        for i in range(24)
    )
    pytester.makepyfile(test_many="import numpy as np\n" + body)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--quant-golden-update")
    r.assert_outcomes(passed=24)
    files = sorted((pytester.path / "golden" / "test_many").iterdir())
    assert len(files) == 48 and not [f for f in files if f.name.startswith(".")]
    from pytest_quant.golden import read

    for i in range(24):
        got = read(pytester.path / "golden" / "test_many", f"g{i}").arrays["output"]
        np.testing.assert_array_equal(got, np.arange(i, i + 300, dtype=np.int16))
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    r.assert_outcomes(passed=24)


def test_golden_dir_option_and_misuse(pytester):
    pytester.makepyfile(
        """
        import numpy as np, pytest

        def test_g(quant_golden):
            quant_golden.check("x", np.arange(3))

        def test_bad_name(quant_golden):
            with pytest.raises(ValueError, match="plain file name"):
                quant_golden.check("../escape", np.arange(3))

        def test_nan(quant_golden):
            with pytest.raises(ValueError, match="non-finite"):
                quant_golden.check("n", np.array([np.nan]))
        """
    )
    r = pytester.runpytest(
        "-p", "no:cacheprovider", "--quant-golden-dir=gold", "--quant-golden-update"
    )
    r.assert_outcomes(passed=3)
    assert (pytester.path / "gold" / "x.npz").is_file()
    assert not (pytester.path / "gold" / "n.npz").exists()


def test_corrupt_sidecar_fails_naming_file_field_and_fix_then_update_rewrites_it(pytester):
    _suite(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    side = pytester.path / "golden" / "test_model" / "codes.json"
    meta = json.loads(side.read_text())
    del meta["arrays"]["output"]["sha256"]
    meta["qparams"] = []
    side.write_text(json.dumps(meta))
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)  # fails, never passes, never crashes the run
    r.stdout.fnmatch_lines(
        [
            "*golden sidecar *codes.json: field 'qparams' must be an object, got []; rewrite "
            "it with pytest --quant-golden-update, or restore it from version control*"
        ]
    )
    assert "KeyError" not in r.stdout.str() and "AttributeError" not in r.stdout.str()
    r = pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    r.assert_outcomes(passed=2)
    r.stdout.fnmatch_lines(["written: *codes.npz"])
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)


def test_nan_in_a_stored_golden_fails_naming_the_file(pytester):
    _suite(pytester)
    pytester.runpytest("-p", "no:cacheprovider", "--quant-golden-update")
    from pytest_quant.golden import read, write

    directory = pytester.path / "golden" / "test_model"
    golden = read(directory, "floats")
    a = golden.arrays["a"].copy()
    a[7] = np.nan
    write(directory, "floats", {"a": a}, golden.qparams, golden.fingerprint)
    r = pytester.runpytest("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(
        [
            "*golden file *floats.npz: array 'a' holds 1 NaN/Inf value(s) (first at index "
            "(7,)); goldens are never written with them; rewrite it with pytest "
            "--quant-golden-update, or restore it from version control*"
        ]
    )
    assert "reference has 1 non-finite" not in r.stdout.str()


@pytest.mark.parametrize(
    "name, why", [("n" * 300, "it is 300 characters long"), ("a\0b", "it contains '\\x00'")]
)
def test_bad_names_are_misuse_before_any_file_is_touched(tmp_path, name, why):
    golden = QuantGolden(tmp_path / "g", update=True)
    with pytest.raises(ValueError) as info:
        golden.check(name, np.arange(3))
    assert f"a golden name must be a plain file name ({why}): {NAME_RULE}" in str(info.value)
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "dtype, now, gold",
    [("int64", 2**63 - 1, -(2**63)), ("uint64", 2**63, 0), ("uint64", 2**64 - 1, 0)],
)
def test_integer_goldens_never_wrap_around(tmp_path, dtype, now, gold):
    golden = QuantGolden(tmp_path, update=True)
    golden.check("big", np.array([gold], dtype))
    with pytest.raises(AssertionError, match="LSB"):
        QuantGolden(tmp_path, update=False).check("big", np.array([now], dtype), max_lsb=1)
