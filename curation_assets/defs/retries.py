"""Retries for transient faults only: what waiting can fix.

Exponential backoff with jitter: 2, 4, 8 s (±) before giving up. Every asset has this policy.
Whether a fault is transient is decided where it is raised (``StorageError.transient``,
``VectorStoreError.transient``: unreachable, timeouts, 5xx, throttling, a held lock); anything
else (a bad setting, a refused credential, a missing bucket or object, bad input, a full disk,
a missing model) is not helped by waiting: ``transient_only`` turns it into a failure that is
not retried and keeps its cause, so the summary and the UI say what broke instead of
"Exceeded max_retries".
"""

import functools
import inspect

import dagster as dg

TRANSIENT = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def is_transient(exc: BaseException) -> bool:
    """Faults a later attempt can get past: those their raiser marked transient, and the
    operating system's connection failures and timeouts."""
    return bool(getattr(exc, "transient", False)) or isinstance(exc, ConnectionError | TimeoutError)


def transient_only(fn):
    """Wrap an asset body (a function or a generator of results): transient faults propagate
    (and are retried), others fail at once."""

    def refuse(exc: Exception) -> dg.Failure:
        cause = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        return dg.Failure(description=f"{fn.__name__}: {cause[:2000]}", allow_retries=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def results(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except dg.Failure:
                raise
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise refuse(exc) from exc

        return results

    @functools.wraps(fn)
    def body(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except dg.Failure:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise
            raise refuse(exc) from exc

    return body
