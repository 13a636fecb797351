"""Dagster's Postgres storage, holding its connections open. Named in docker/dagster.yaml.

dagster-postgres opens a connection for every read and write unless told otherwise (SQLAlchemy's
NullPool: a TCP connection, a SCRAM password exchange and a server process each, ~10 ms of which
3 ms of the caller's CPU here). The daemon's loops, the code server's sensor ticks and every run
worker pay that many times a second during a burst (a batch of one source alone opened 301).
The webserver is told to hold one open (``optimize_for_webserver``); this storage tells every
process that loads the instance, through that same call: a connection per storage kept open
(more opened beside it when threads need them at once, and closed after), recycled hourly, and
no statement timeout, as before. Connections a restarted Postgres closed fail their next use
once, as the webserver's do, then are replaced.
"""

from __future__ import annotations

from dagster_postgres import DagsterPostgresStorage

from curation_assets.deploy.connections import hold_connections


class HeldConnectionsPostgresStorage(DagsterPostgresStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value) -> DagsterPostgresStorage:
        storage = super().from_config_value(inst_data, config_value)  # inst_data names this class: run workers too
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            hold_connections(part)
        return storage
