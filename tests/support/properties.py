"""
Settings for the property tests (hypothesis): deterministic (derandomized,
so a CI run is reproducible), no example database written to the
checkout, no per-example deadline (the machine may be busy).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

__all__ = ["propertySettings"]


def propertySettings(maxExamples: int) -> settings:
    """
    Hypothesis settings for a property test of at most C{maxExamples}
    examples.
    """
    return settings(
        max_examples=maxExamples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
