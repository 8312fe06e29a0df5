"""Plugins with a deliberate bug, loaded by tests as ``tests.support.faulty_plugins:create_handler``: they
prove that a bug triggered by one document is quarantined and the pipeline goes on."""

from __future__ import annotations

from sync_gateway.contracts import Conflict, Resolution


class FaultyHandler:
    """A conflict handler that fails on every conflict, as a buggy third-party handler would."""

    name = "faulty"

    def resolve(self, conflict: Conflict) -> Resolution:
        raise RuntimeError(f"injected handler bug while resolving a {conflict.kind} conflict")


def create_handler() -> FaultyHandler:
    return FaultyHandler()
