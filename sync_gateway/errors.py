"""The gateway's error tree. Every error raised on purpose is one of these.

SyncGatewayError
├── CouchError
│   ├── CouchUnavailable        (connection refused, timeout, 5xx: retry with backoff)
│   │   ├── UpstreamTimeout     (the server sent nothing for the read timeout)
│   │   ├── UpstreamConnectFailed (no connection could be made: refused, unreachable, TLS)
│   │   └── StreamCut           (broke off a response the device was already receiving; sync_gateway.edge.errors)
│   ├── DocumentNotFound
│   ├── RevisionConflict
│   └── Unauthorized
│       └── AccountLocked       (CouchDB 3.4+ locks an account after repeated failed logins)
├── CheckpointLost              (another process moved a checkpoint: this one stops following)
├── SchemaValidationError       (a document or request body violates its JSON Schema)
├── ConfigurationError          (bad settings, unknown plugin names)
│   ├── PluginError
│   ├── ProfileError            (an offline data profile file is invalid: file, line, field)
│   └── SelectorSyntaxError     (a profile selector does not compile; also a ValueError)
├── RuleError                   (a rule definition is malformed or not portable)
├── ConflictHandlerError        (plugins: conflict_handlers.hlc.InvalidTimestamp, also a ValueError)
├── ConnectorError
│   ├── TransientConnectorError (retry)
│   └── PermanentConnectorError (dead-letter; plugins: Tryton's MappingError, TrytonUserError, ...)
├── ApplierUnavailable          (this process cannot write resolutions: 503)
└── ApiError                    (a request the admin API refuses; carries a stable code)
    ├── NotFound
    ├── InvalidRequest
    │   ├── FieldPickError      (a per-field resolution that cannot be applied)
    │   ├── AttachmentConflict  (attachments changed differently and the winner does not say which)
    │   ├── OidcRefused         (the OIDC issuer's answer failed a check)
    │   └── SignInRefused       (wrong account name or password)
    ├── StateConflict           (valid, but the target's state does not allow it: 409)
    │   └── AccountLockedOut    (too many failed sign-ins)
    ├── NotAuthenticated        (no or a bad credential: 401)
    ├── Forbidden               (the caller's roles do not allow it: 403, nothing changed)
    │   └── PageForbidden       (the same on a web page; sync_gateway.api.ui.session, carries the session)
    └── EdgeRefusal             (a device request the edge refuses; sync_gateway.edge.errors, own status)

Third-party exceptions are translated at the boundary with ``raise X(...) from exc``; the API maps each of
these classes to its HTTP status in one table (``sync_gateway.api.errors.STATUS_BY_ERROR``), and
``tests/unit/test_error_table.py`` fails when a class lacks its row or its place in this drawing. Plugins
raise the classes ``sync_gateway.contracts`` re-exports, or their own subclasses of them.
"""

from __future__ import annotations

from collections.abc import Sequence


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


class UpstreamTimeout(CouchUnavailable):
    """The server sent nothing for the read timeout (the gateway's own HTTP client)."""


class UpstreamConnectFailed(CouchUnavailable):
    """No connection to the server could be made (refused, unreachable, TLS, connect timeout)."""


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


class ProfileError(ConfigurationError):
    """A profile file is invalid; ``file``, ``line`` and ``field`` say where."""

    code = "invalid_profile"

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.file = file
        self.line = line
        self.field = field
        self.message = message


class SelectorSyntaxError(ConfigurationError, ValueError):
    """A selector that does not compile; ``path`` is the dotted location inside the selector."""

    code = "invalid_selector"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class RuleError(SyncGatewayError):
    """A rule definition is malformed or not portable, or a rule failed on the data it was given."""

    code = "rule_error"


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


class ApplierUnavailable(SyncGatewayError):
    """No applier is configured in this process, so a resolution cannot be written (HTTP 503)."""

    code = "applier_unavailable"


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


class FieldPickError(InvalidRequest):
    """A field-by-field resolution that cannot be applied: unknown path, bad version index, or a
    conflicting path left without a pick. ``fields`` names the offending paths."""

    code = "invalid_field_pick"

    def __init__(self, message: str, fields: Sequence[str]) -> None:
        super().__init__(message)
        self.fields = list(fields)


class AttachmentConflict(InvalidRequest):
    """The versions changed an attachment differently, and the winner does not say which one it keeps.
    ``names`` lists the attachments."""

    code = "attachment_conflict"

    def __init__(self, message: str, names: Sequence[str]) -> None:
        super().__init__(message)
        self.names = list(names)


class OidcRefused(InvalidRequest):
    """An ID token or the issuer's answer did not pass a check; ``code`` says which, the message what to do."""

    code = "oidc_refused"


class SignInRefused(InvalidRequest):
    """Wrong name or password (one message for both, so names cannot be probed)."""

    code = "sign_in_refused"


class StateConflict(ApiError):
    """The request is valid but the target is in a state that does not allow it (e.g. already resolved)."""

    code = "state_conflict"


class AccountLockedOut(StateConflict):
    """Too many failed sign-ins in a row: the account refuses every password until the lock expires."""

    code = "account_locked"
    just_locked = False  # True on the failure that set the lock (the audit trail records that one)


class NotAuthenticated(ApiError):
    """No credential, or one the gateway does not accept (unknown, expired, revoked, retired)."""

    code = "unauthorized"


class Forbidden(ApiError):
    """The caller is known but its roles do not allow the action; nothing was changed."""

    code = "forbidden"
