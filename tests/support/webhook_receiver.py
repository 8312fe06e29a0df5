"""A real webhook receiver on loopback for the integration tests: it records every request (path, headers,
body, the answer it gave) and answers by a script: ``fail_first`` answers 500 to the first deliveries of each
event id, ``down`` answers 503 to everything, and any path under ``/down`` always answers 503."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackHttp


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class WebhookReceiver:
    fail_first: int = 0
    down: bool = False
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._http = LoopbackHttp(_handler(self), "webhook-receiver")
        self.url = self._http.url

    def start(self) -> WebhookReceiver:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            if path.startswith("/down") or self.down:
                status = 503
            else:
                event_id = headers.get("x-sync-event-id", "")
                self._seen[event_id] = self._seen.get(event_id, 0) + 1
                status = 500 if self._seen[event_id] <= self.fail_first else 200
            self.received.append(Received(path, headers, body, status))
            return status

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def accepted(self, path: str = "/hooks") -> list[Received]:
        """Deliveries answered 200 at ``path``, in order."""
        return [r for r in self.snapshot() if r.path == path and r.status == 200]


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.answer(self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler
