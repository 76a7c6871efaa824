from __future__ import annotations

import json

import pytest

from pytest_quant import report


def _rec(test_id, value, bound, passed, metric="rms_error"):
    return {
        "test_id": test_id,
        "check": "assert_quant_close",
        "metric": metric,
        "value": value,
        "bound": bound,
        "margin": bound - value,
        "passed": passed,
    }


def test_table_worst_first_and_capped():
    records = [_rec(f"t{i:02d}", 0.001 * i, 0.02, True) for i in range(25)]
    records.append(_rec("bad", 0.05, 0.02, False))
    lines = report.table(records, report_path="out.json")
    assert lines[0].split()[:3] == ["test", "check", "metric"]
    assert lines[1].startswith("bad") and lines[1].rstrip().endswith("FAIL")
    assert lines[2].startswith("t24")  # smallest margin among the passes
    assert "26 quant checks, 1 failed" in lines
    assert lines[-1] == "... 6 more rows not shown (all of them in out.json)"


def test_json_written_atomically_and_complete(tmp_path):
    path = tmp_path / "sub" / "quant.json"
    records = [_rec("b", 0.01, 0.02, True), _rec("a", 0.03, 0.02, False)]
    report.write_json(path, records, {"tolerance": 0.02})
    doc = json.loads(path.read_text())
    assert doc["summary"] == {"checks": 2, "failed": 1} and doc["tolerance"] == 0.02
    assert [r["test_id"] for r in doc["records"]] == ["a", "b"]
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_json_write_failure_leaves_no_partial_file(tmp_path):
    path = tmp_path / "quant.json"
    with pytest.raises(ValueError):
        report.write_json(path, [_rec("a", float("nan"), 0.02, False)], {})
    assert list(tmp_path.iterdir()) == []


def test_round_trip_through_user_properties():
    props = [("other", 1), (report.PROPERTY, json.dumps(_rec("a", 0.01, 0.02, True)))]
    assert report.from_user_properties(props) == [_rec("a", 0.01, 0.02, True)]


def test_blame_behind_a_failure_is_info_not_a_check(tmp_path):
    blame = {**_rec("a", 794.2, 0.2887, True, "worst_layer_rmse_per_scale"), "info": True}
    records = [_rec("a", 0.1, 0.02, False), blame]
    lines = report.table(records)
    assert "1 quant checks, 1 failed" in lines
    assert [ln.split()[-1] for ln in lines[1:3]] == ["FAIL", "info"]
    report.write_json(tmp_path / "q.json", records, {})
    assert json.loads((tmp_path / "q.json").read_text())["summary"] == {"checks": 1, "failed": 1}
