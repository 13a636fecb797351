"""How a process holds its Dagster storage connections open (one home for both places that do it:
the production storage, ``deploy/storage.py``, and a batch run, ``defs/jobs.py``).

Against Postgres, Dagster opens a connection for every read and write unless told otherwise
(SQLAlchemy's NullPool: a TCP connection, a SCRAM password exchange and a server process each,
~10 ms and 3 ms of the caller's CPU here). The webserver is told to hold one open
(``optimize_for_webserver``); ``hold_connections`` makes that same call. A no-op on SQLite.
"""

POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 16  # connections beyond the held one while threads (the daemon's loops) overlap


def hold_connections(storage) -> None:
    """Keep ``storage``'s connections (a ``DagsterInstance`` or one of its storages) open across
    its writes: recycled hourly, more opened beside the held one while threads need them at once,
    and no statement timeout, as before."""
    storage.optimize_for_webserver(statement_timeout=0, pool_recycle=POOL_RECYCLE_S, max_overflow=MAX_OVERFLOW)
