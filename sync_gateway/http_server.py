"""The one way a gateway process serves HTTP (admin API, edge, health port): uvicorn on a given host and port,
without uvicorn's own signal handling, since SIGTERM is the gateway's to handle (it stops every server with
everything else, see ``runtime``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn that leaves SIGINT and SIGTERM to the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def quiet_server(app: Any, host: str, port: int) -> QuietServer:
    """A server for ``app`` on ``host:port``: no access log (requests are logged by the app), no lifespan."""
    return QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"))
