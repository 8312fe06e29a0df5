"""The immutable event log in ``sync_events``."""

from sync_gateway.eventlog.store import EventLog, event_id_for

__all__ = ["EventLog", "event_id_for"]
