"""Retries for transient faults: storage or vector store briefly unreachable.

Exponential backoff with jitter: 2, 4, 8 s (±) before giving up. Failures that retrying
cannot fix (a corrupt video, a missing input) are raised with ``allow_retries=False``.
"""

import dagster as dg

TRANSIENT = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
