"""Async JSON-RPC client for Tryton: session login, the user context, Tryton's type encoding, error mapping.

Tryton answers ``POST /<db>/rpc/`` with ``{"id", "result"}`` or ``{"id", "error": [name, args]}``; HTTP 401
means the session expired (we log in again once). Errors are translated here, at the boundary:

* ``UserError`` (and every validation error, which Tryton sends as ``UserError``) → :class:`TrytonUserError`,
  a :class:`PermanentConnectorError` carrying Tryton's own message;
* ``UserWarning`` → :class:`TrytonWarning` (permanent unless the caller acknowledges it, see
  :meth:`TrytonClient.call_acknowledging`);
* ``ConcurrencyException``, time-outs, connection errors, 5xx, 429, a locked SQLite database →
  :class:`TransientConnectorError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from sync_gateway.contracts import PermanentConnectorError, TransientConnectorError

T = TypeVar("T")

_TRANSIENT_SERVER_HINTS = ("database is locked", "could not serialize", "deadlock", "timeout")


class TrytonUserError(PermanentConnectorError):
    """Tryton refused the data (``UserError``, domain/required/size validation, access error)."""

    def __init__(self, message: str, description: str = "") -> None:
        super().__init__(f"{message} {description}".strip())
        self.tryton_message = message
        self.description = description


class TrytonWarning(PermanentConnectorError):
    """Tryton asks for confirmation (``UserWarning``); ``name`` is the key a ``res.user.warning`` skips."""

    def __init__(self, name: str, message: str, description: str = "") -> None:
        super().__init__(f"{message} {description}".strip())
        self.name = name
        self.kind = name.split(".", 1)[1] if "." in name else name


# ------------------------------------------------------------------------------------- type encoding


def encode(value: Any) -> Any:
    """Turn Python values into Tryton's JSON objects (``{"__class__": "Decimal", ...}``)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dt.time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    return value


def _decode_object(obj: dict[str, Any]) -> Any:
    cls = obj.get("__class__")
    if cls is None:
        return obj
    if cls == "Decimal":
        return Decimal(obj["decimal"])
    if cls == "datetime":
        return dt.datetime(
            obj["year"],
            obj["month"],
            obj["day"],
            obj.get("hour", 0),
            obj.get("minute", 0),
            obj.get("second", 0),
            obj.get("microsecond", 0),
        )
    if cls == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if cls == "time":
        return dt.time(obj.get("hour", 0), obj.get("minute", 0), obj.get("second", 0), obj.get("microsecond", 0))
    if cls == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if cls == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def decode(text: str | bytes) -> Any:
    """Parse a Tryton JSON answer, turning its ``__class__`` objects back into Python values."""
    return json.loads(text, object_hook=_decode_object, parse_float=float)


# ------------------------------------------------------------------------------------------ client


class TrytonClient:
    """One logged-in session on one Tryton database, shared by concurrent calls (httpx keeps connections)."""

    def __init__(
        self,
        url: str,
        database: str,
        user: str,
        password: str,
        *,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._rpc_url = f"{url.rstrip('/')}/{database}/rpc/"
        self._user = user
        self._password = password
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )
        self._auth: str | None = None
        self._ids = itertools.count(1)
        self.user_id: int | None = None
        self.context: dict[str, Any] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(self) -> None:
        """Open a session and load the user's preferences as the context of every later call."""
        result = await self._post("common.db.login", [self._user, {"password": self._password}, "en"], None)
        if not isinstance(result, list) or len(result) < 2:
            raise TransientConnectorError("Tryton login answered without a session")
        user_id, session = int(result[0]), str(result[1])
        token = base64.b64encode(f"{self._user}:{user_id}:{session}".encode()).decode("ascii")
        self._auth = f"Session {token}"
        self.user_id = user_id
        prefs = await self._post("model.res.user.get_preferences", [True, {}], self._auth)
        self.context = {k: v for k, v in dict(prefs).items() if not k.endswith(".rec_name")}

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with ``params`` as given (no context added); logs in first if needed."""
        if self._auth is None:
            await self.login()
        try:
            return await self._post(method, list(params), self._auth)
        except _SessionExpired:
            await self.login()
            return await self._post(method, list(params), self._auth)

    async def execute(self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*args, context)`` with the user context merged with ``context``."""
        if self._auth is None:
            await self.login()
        ctx = {**self.context, **(context or {})}
        return await self.call(f"model.{model}.{method}", *args, ctx)

    async def call_acknowledging(
        self, allowed: Collection[str], operation: Callable[[], Awaitable[T]], *, max_warnings: int = 5
    ) -> T:
        """Run ``operation``; a ``UserWarning`` whose kind is in ``allowed`` is skipped the way Tryton's own
        client does (a ``res.user.warning`` record for this user) and the operation runs again."""
        for _ in range(max_warnings):
            try:
                return await operation()
            except TrytonWarning as warning:
                if warning.kind not in allowed:
                    raise
                await self.execute(
                    "res.user.warning", "create", [{"user": self.user_id, "name": warning.name, "always": False}]
                )
        return await operation()

    async def _post(self, method: str, params: list[Any], auth: str | None) -> Any:
        body = json.dumps({"id": next(self._ids), "method": method, "params": encode(params)})
        headers = {"Authorization": auth} if auth else {}
        try:
            response = await self._http.post(self._rpc_url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientConnectorError(f"Tryton timed out on {method}") from exc
        except httpx.TransportError as exc:
            raise TransientConnectorError(f"Tryton unreachable: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code == 401:
            if method == "common.db.login":
                raise TransientConnectorError("Tryton refused the login: check the user and TRYTON_PASSWORD")
            raise _SessionExpired()
        if response.status_code == 403:
            raise TransientConnectorError(f"Tryton refused {method} (403): check the user's rights")
        if response.status_code == 404:
            raise TransientConnectorError(f"Tryton has no database at {self._rpc_url} (404)")
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientConnectorError(f"Tryton answered {response.status_code} on {method}")
        if response.status_code >= 400:
            raise PermanentConnectorError(f"Tryton answered {response.status_code} on {method}")
        try:
            data = decode(response.content)
        except ValueError as exc:
            raise TransientConnectorError(f"Tryton sent invalid JSON for {method}") from exc
        if "error" in data and data["error"] is not None:
            raise _translate_error(data["error"])
        return data.get("result")


class _SessionExpired(TransientConnectorError):
    """Tryton answered 401 to a logged-in call: ``call`` logs in again once; a second 401 is retried later."""

    def __init__(self) -> None:
        super().__init__("Tryton ended the session (401)")


def _translate_error(error: Sequence[Any]) -> Exception:
    name = str(error[0]) if error else "Error"
    args = error[1] if len(error) > 1 else None
    if name == "UserError" and isinstance(args, list | tuple):
        return TrytonUserError(str(args[0]), str(args[1] or "") if len(args) > 1 else "")
    if name == "UserWarning" and isinstance(args, list | tuple):
        return TrytonWarning(str(args[0]), str(args[1]), str(args[2] or "") if len(args) > 2 else "")
    if name in {"ConcurrencyException", "RateLimitException", "TimeOutException"}:
        detail = args[0] if isinstance(args, list | tuple) and args else args
        return TransientConnectorError(f"Tryton {name}: {detail}")
    if name == "LoginException":
        return TransientConnectorError("Tryton asks for another login step: check the connector's user")
    # an unexpected server-side exception: [str(exc), traceback]
    lowered = name.lower()
    if any(hint in lowered for hint in _TRANSIENT_SERVER_HINTS):
        return TransientConnectorError(f"Tryton server error: {name}")
    return PermanentConnectorError(f"Tryton server error: {name}")
