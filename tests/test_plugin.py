from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("numpy", "tensorflow", "hypothesis", "ai_edge_litert", "keras")


def test_importing_package_and_plugin_loads_nothing_heavy():
    code = textwrap.dedent(
        f"""
        import sys, pytest_quant, pytest_quant.plugin
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pytest_run_that_does_not_use_us_imports_nothing_heavy(pytester):
    pytester.makepyfile(
        f"""
        import sys

        def test_plain():
            assert 1 + 1 == 2

        def test_zz_report():
            heavy = [m for m in {HEAVY!r} if m in sys.modules and m != "hypothesis"]
            assert heavy == [], heavy
        """
    )
    # -p no:hypothesispytest: hypothesis's own plugin is not ours to account for.
    result = pytester.runpytest_subprocess("-p", "no:hypothesispytest", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_plugin_is_registered_and_can_be_disabled(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.quant(tolerance=None, max_lsb=None)*"])
    result = pytester.runpytest_subprocess("-p", "no:quant", "--markers")
    assert "pytest.mark.quant(" not in result.stdout.str()


def test_ci_profile_selectable_from_command_line(pytester):
    pytester.makepyfile(
        """
        from hypothesis import given, settings, strategies as st

        def test_profile():
            assert settings.get_current_profile_name() == "pytest-quant-ci"
            assert settings.default.derandomize
        """
    )
    result = pytester.runpytest_subprocess("--hypothesis-profile=pytest-quant-ci")
    result.assert_outcomes(passed=1)
