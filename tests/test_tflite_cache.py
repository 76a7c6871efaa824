"""The conversion cache (pytest_quant/tflite/cache.py): checksummed entries, damage
reported and converted again, cached failures, and a cache directory that is a file.

Most tests drive ``_cached`` with a stand-in job and converter (no TensorFlow); one
goes through the real converter.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_quant import QuantWarning
from pytest_quant.tflite import cache as cache_mod
from pytest_quant.tflite.cache import CacheEntryWarning, _cached
from pytest_quant.tflite.failures import ConversionError

MODEL = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 8  # a TFLite identifier, and weights


class _Job:
    """What ``_cached`` reads of a conversion job."""

    mode, version, settings, timeout, rep = "int8", "2.21.0", {"options": {}}, 60.0, None
    route = SimpleNamespace(flavour="keras3", via="saved_model", entry="from_saved_model")

    def key(self) -> str:
        return "k" * 64


class _Converter:
    """Counts conversions; returns ``content`` or raises a deterministic failure."""

    def __init__(self, content: bytes = MODEL, fail: str | None = None) -> None:
        self.content, self.fail, self.calls = content, fail, 0

    def __call__(self, job: _Job) -> bytes:
        self.calls += 1
        if self.fail is not None:
            exc = ConversionError(self.fail)
            exc.deterministic, exc.report, exc.output = True, self.fail, "converter output"
            raise exc
        return self.content


@pytest.fixture
def entry(tmp_path):
    """A cache holding one converted model: (cache dir, model file, record file)."""
    cache = tmp_path / "cache"
    assert _cached(_Job(), cache, _Converter()) == MODEL
    return cache, cache / f"{_Job().key()}.tflite", cache / f"{_Job().key()}.json"


def _reconverted(cache: Path, damaged: Path) -> None:
    """The next read warns naming ``damaged``, converts again, and returns the model;
    the read after that is a silent hit."""
    again = _Converter()
    with pytest.warns(CacheEntryWarning) as seen:
        assert _cached(_Job(), cache, again) == MODEL
    assert again.calls == 1
    (warning,) = seen
    message = str(warning.message)
    assert f"conversion cache entry {damaged} is damaged (" in message
    assert "deleted, and the model converted again" in message
    _assert_silent_hit(cache)


def _assert_silent_hit(cache):
    hit = _Converter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cached(_Job(), cache, hit) == MODEL
    assert hit.calls == 0


def test_an_intact_entry_is_a_silent_hit_and_carries_checksums(entry):
    cache, _, record = entry
    kept = json.loads(record.read_text())
    assert kept["tflite_sha256"] == hashlib.sha256(MODEL).hexdigest()
    assert kept["bytes"] == len(MODEL) and kept["mode"] == "int8"
    body = json.dumps({k: v for k, v in kept.items() if k != "record_sha256"}, sort_keys=True)
    assert kept["record_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    _assert_silent_hit(cache)


def test_a_truncated_model_is_reported_and_converted_again(entry):
    cache, model, _ = entry
    model.write_bytes(MODEL[: len(MODEL) // 2])
    _reconverted(cache, model)


def test_one_flipped_weight_byte_is_reported_and_converted_again(entry):
    """The issue: a model whose weight byte changed was used silently, and passed."""
    cache, model, _ = entry
    data = bytearray(MODEL)
    data[-100] ^= 0x01  # past the header: still a TFLite file to check_tflite
    model.write_bytes(bytes(data))
    _reconverted(cache, model)


def test_a_damaged_record_is_reported_and_converted_again(entry):
    cache, _, record = entry
    record.write_text(record.read_text().replace('"int8"', '"int4"'))
    _reconverted(cache, record)


def test_a_record_that_is_no_json_is_reported_and_converted_again(entry):
    cache, _, record = entry
    record.write_bytes(record.read_bytes()[:20])
    _reconverted(cache, record)


def test_a_model_without_its_record_is_reported_and_converted_again(entry):
    cache, model, record = entry
    record.unlink()
    _reconverted(cache, model)


def test_an_entry_in_the_old_format_without_checksums_is_converted_again(entry):
    """v3 entries had no checksums. Their keys differ (the key version is v4), so after
    an upgrade they are never looked up; one found under a current key is damaged."""
    cache, _, record = entry
    old = json.loads(record.read_text())
    for field in ("record_sha256", "tflite_sha256"):
        del old[field]
    record.write_text(json.dumps(old))
    _reconverted(cache, record)
    assert cache_mod._KEY_VERSION == b"pytest-quant-convert-v4"


def test_a_record_written_without_its_model_is_a_plain_miss(entry):
    """The record is written first; a crash before the model leaves only it: convert
    again, no warning (the same as deleting the .tflite by hand)."""
    cache, model, _ = entry
    model.unlink()
    again = _Converter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cached(_Job(), cache, again) == MODEL
    assert again.calls == 1


# --- cached failures ------------------------------------------------------------------


@pytest.fixture
def failure(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ConversionError, match="converter crashed"):
        _cached(_Job(), cache, _Converter(fail="converter crashed"))
    return cache, cache / f"{_Job().key()}.json"


def test_a_failure_is_replayed_from_its_checksummed_record(failure):
    cache, record = failure
    assert "record_sha256" in json.loads(record.read_text())
    again = _Converter()
    with pytest.raises(ConversionError, match="replayed from the conversion cache") as info:
        _cached(_Job(), cache, again)
    assert again.calls == 0 and str(record) in str(info.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace("converter crashed", "converter crashes"),
        lambda text: text[: len(text) // 2],
        lambda text: "",
    ],
    ids=["edited", "truncated", "empty"],
)
def test_a_damaged_failure_record_is_reported_and_converted_again(failure, damage):
    cache, record = failure
    record.write_text(damage(record.read_text()))
    _reconverted(cache, record)


# --- the cache directory ----------------------------------------------------------------


def test_a_cache_dir_that_is_a_file_is_a_clear_error(tmp_path):
    """It used to be a bare FileExistsError."""
    path = tmp_path / "cache"
    path.write_text("")
    with pytest.raises(ValueError, match=rf"cache_dir: {path} is a file; give a directory"):
        _cached(_Job(), path, _Converter())
    with pytest.raises(ValueError, match=rf"cache_dir: .*{path.name} is a file, so nothing can"):
        _cached(_Job(), path / "sub", _Converter())


def test_the_warning_is_a_quant_warning():
    assert issubclass(CacheEntryWarning, QuantWarning)


# --- through the real converter -------------------------------------------------------


def test_a_flipped_byte_in_a_real_cached_model_is_converted_again(tmp_path, forbid_conversion):
    pytest.importorskip("keras", reason="Keras/TensorFlow not installed: pytest-quant[tf]")
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed: pytest-quant[tf]")
    from pytest_quant.tflite import TFLiteRunner, convert

    from . import models

    model = models.mlp()
    first = convert(model, mode="dynamic", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.tflite")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # a byte inside the weights
    path.write_bytes(bytes(data))
    with pytest.warns(CacheEntryWarning, match=rf"entry {path} is damaged \("):
        again = convert(model, mode="dynamic", cache_dir=tmp_path)
    assert again == first and path.read_bytes() == first
    TFLiteRunner(again)  # and the test goes on with a working model
    forbid_conversion()
    assert convert(model, mode="dynamic", cache_dir=tmp_path) == first
