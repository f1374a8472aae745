"""The embedded broker: kombu's SQLAlchemy transport with a configurable polling interval.

kombu's transport hands every transport option to ``create_engine`` and so cannot take
``polling_interval`` (it polls once a second, which adds up to a second to every job's start).
This subclass keeps ``polling_interval`` for kombu and passes only engine options on.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as sqla
from sqlalchemy import create_engine

_NOT_FOR_ENGINE = {
    "queue_tablename",
    "message_tablename",
    "callback",
    "errback",
    "max_retries",
    "interval_start",
    "interval_step",
    "interval_max",
    "retry_errors",
    "polling_interval",
}


class Channel(sqla.Channel):
    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items() if k not in _NOT_FOR_ENGINE}
        return create_engine(conninfo.hostname, **options)


class Transport(sqla.Transport):
    Channel = Channel


def install() -> None:
    """Make the ``sqla+`` URL scheme use this transport in this process."""
    TRANSPORT_ALIASES["sqla"] = "workers.broker:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = "workers.broker:Transport"
