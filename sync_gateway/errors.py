"""The gateway's error tree. Every error raised on purpose is one of these.

SyncGatewayError
├── CouchError
│   ├── CouchUnavailable        (connection refused, timeout, 5xx: retry with backoff)
│   ├── DocumentNotFound
│   ├── RevisionConflict
│   └── Unauthorized
│       └── AccountLocked       (CouchDB 3.4+ locks an account after repeated failed logins)
├── CheckpointLost              (another process moved a checkpoint: this one stops following)
├── SchemaValidationError       (a document or request body violates its JSON Schema)
├── ConfigurationError          (bad settings, unknown plugin names)
│   └── PluginError
├── ConflictHandlerError
├── ConnectorError
│   ├── TransientConnectorError (retry)
│   └── PermanentConnectorError (dead-letter)
└── ApiError                    (a request the admin API refuses; carries a stable code)
    ├── NotFound
    ├── InvalidRequest
    ├── NotAuthenticated        (no or a bad credential: 401)
    └── Forbidden               (the caller's roles do not allow it: 403, nothing changed)

Third-party exceptions are translated at the boundary with ``raise X(...) from exc``; the API maps these
classes to HTTP status codes in one table (``sync_gateway.api.errors``).
"""

from __future__ import annotations


class SyncGatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code = "sync_gateway_error"


class CouchError(SyncGatewayError):
    """CouchDB answered with an error or could not be reached."""

    code = "couch_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CouchUnavailable(CouchError):
    """CouchDB is unreachable or answered 5xx; the caller may retry."""

    code = "couch_unavailable"


class DocumentNotFound(CouchError):
    code = "not_found"


class RevisionConflict(CouchError):
    code = "revision_conflict"


class Unauthorized(CouchError):
    code = "couch_unauthorized"


class AccountLocked(Unauthorized):
    """CouchDB refuses the account for a while after repeated failed logins (CouchDB 3.4+: five failures,
    five minutes). Waiting or restarting does not help until the lock expires; fix the password first."""

    code = "couch_account_locked"


class CheckpointLost(SyncGatewayError):
    """Another process saved the checkpoint since we read it: it owns that feed now, we stop following."""

    code = "checkpoint_lost"


def is_outage(exc: BaseException) -> bool:
    """True for failures that say nothing about the data being handled (CouchDB down, credentials refused,
    database gone): the work is retried as it is. Anything else is the data's or the code's fault."""
    if isinstance(exc, Unauthorized):
        return exc.status == 401 or isinstance(exc, AccountLocked)  # a 403 may be validate_doc_update's word
    return isinstance(exc, CouchUnavailable) or (
        isinstance(exc, DocumentNotFound) and ("no_db_file" in str(exc) or "Database does not exist" in str(exc))
    )


class SchemaValidationError(SyncGatewayError):
    """A document violates its schema; ``reasons`` lists each violation."""

    code = "schema_invalid"

    def __init__(self, message: str, reasons: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or []


class ConfigurationError(SyncGatewayError):
    code = "configuration_error"


class PluginError(ConfigurationError):
    """A plugin name is unknown, duplicated or its object does not meet its protocol."""

    code = "plugin_error"


class ConflictHandlerError(SyncGatewayError):
    code = "conflict_handler_error"


class ConnectorError(SyncGatewayError):
    code = "connector_error"


class TransientConnectorError(ConnectorError):
    """The ERP could not take the batch now (timeout, lock, 5xx): retry with backoff."""

    code = "connector_transient"


class PermanentConnectorError(ConnectorError):
    """The ERP refused the data itself: retrying will not help, dead-letter it."""

    code = "connector_permanent"


class ApiError(SyncGatewayError):
    """A request refused by the admin API, with a stable machine-readable code."""

    code = "invalid_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class NotFound(ApiError):
    code = "not_found"


class InvalidRequest(ApiError):
    code = "invalid_request"


class StateConflict(ApiError):
    """The request is valid but the target is in a state that does not allow it (e.g. already resolved)."""

    code = "state_conflict"


class NotAuthenticated(ApiError):
    """No credential, or one the gateway does not accept (unknown, expired, revoked, retired)."""

    code = "unauthorized"


class Forbidden(ApiError):
    """The caller is known but its roles do not allow the action; nothing was changed."""

    code = "forbidden"
