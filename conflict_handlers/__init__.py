"""Built-in conflict handlers, one module each, registered in the ``sync_gateway.conflict_handlers`` group.

Every module exposes ``create_handler() -> ConflictHandler`` and imports only ``sync_gateway.contracts`` and
the standard library. See ``README.md`` for each handler's rules and the timestamp format.
"""

from ._common import losing_versions

__all__ = ["losing_versions"]
