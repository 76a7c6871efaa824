from __future__ import annotations

import pytest

from pytest_quant.tflite import _deps


@pytest.mark.parametrize(
    "have, extra", [("tensorflow-cpu", "tf-cpu"), ("tensorflow", "tf"), (None, "tf-cpu")]
)
def test_the_hint_names_the_extra_that_matches_the_installed_tensorflow(monkeypatch, have, extra):
    monkeypatch.setattr(_deps, "installed_tensorflow", lambda: have)
    monkeypatch.setattr(_deps, "find_spec", lambda m: None if m in ("tensorflow", "x") else 1)
    text = _deps.hint("converter")
    assert f'pip install "pytest-quant[{extra}]"' in text
    assert text.startswith("missing: tensorflow.")
    if have:
        assert f"you have {have}" in text


def test_every_missing_module_is_listed_at_once(monkeypatch):
    monkeypatch.setattr(_deps, "installed_tensorflow", lambda: None)
    monkeypatch.setattr(_deps, "find_spec", lambda m: None)
    text = _deps.hint("interpreter")
    assert text.startswith("missing: ai_edge_litert, flatbuffers, filelock.")
    assert '[litert]"' in text


def test_require_raises_with_the_hint():
    with pytest.raises(ModuleNotFoundError, match=r"no_such_module_xyz is not installed: "):
        _deps.require("no_such_module_xyz")
