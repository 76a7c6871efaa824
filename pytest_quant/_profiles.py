"""The hypothesis profile pytest-quant ships for CI (imported only when used)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

#: ``pytest --hypothesis-profile=pytest-quant-ci``: same examples every run, no deadline
#: (shared CI machines are noisy), failures printed with a reproduction blob.
PROFILE = "pytest-quant-ci"

settings.register_profile(
    PROFILE,
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
