"""Shared test configuration: hypothesis profiles.

``ci`` (default) keeps property tests quick; ``thorough`` is for by-hand runs; ``fuzz`` is the long
fuzzing run of the hostile-input property tests (docs/robustness.md): 20,000 examples per test by
default (``RECEVAL_FUZZ_EXAMPLES`` changes it), no deadline, no example database writes.
"""

import os

from hypothesis import HealthCheck, settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=int(os.environ.get("RECEVAL_FUZZ_EXAMPLES", "20000")), deadline=None,
                          suppress_health_check=_SLOW, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
