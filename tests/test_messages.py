from __future__ import annotations

from pytest_quant import messages


def test_histogram_exact_when_few_values():
    assert messages.histogram_line({0: 990, 1: 9, 3: 1}) == (
        "  histogram (|error| in LSB): 0: 990  1: 9  3: 1"
    )


def test_histogram_grouped_by_magnitude_when_wide():
    hist = {-95: 1, -40: 2, -5: 3, -1: 4, 0: 6, 1: 5, 2: 7, 3: 1, 9: 2, 100: 1}
    assert messages.histogram_line(hist, label="now - golden in LSB") == (
        "  histogram (now - golden in LSB, grouped by magnitude): "
        "0: 6  |1|: 9  |2..3|: 8  |4..7|: 3  |8..15|: 2  |32..63|: 2  |64..127|: 2"
    )


def test_bound_line_names_the_source():
    assert messages.bound_line("ini quant_tolerance = 0.05", "--quant-tolerance") == (
        "  bound from ini quant_tolerance = 0.05; change it with --quant-tolerance"
    )


def test_bound_line_of_an_argument_says_to_change_the_call():
    # an argument beats options, ini and marker: pointing at them would not help
    line = messages.bound_line("the argument tolerance=1e-06", "--quant-tolerance")
    assert line == "  bound from the argument tolerance=1e-06; change it in the call"
