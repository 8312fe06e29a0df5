"""Async CouchDB 3 client: httpx's requests and responses over the gateway's own pooled HTTP/1.1 connections
(:mod:`sync_gateway.couch.transport`).

Transient failures (connection refused, timeouts, 5xx) are retried with the shared backoff
(``sync_gateway.retry``), so a worker survives a CouchDB restart. ``retries=None`` retries forever
(workers), an integer bounds it (API).
Sequences are opaque JSON values (``Seq``): stored and passed back, never compared.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import structlog

from sync_gateway import jsontext, metrics
from sync_gateway.couch.capabilities import ServerCapabilities
from sync_gateway.couch.transport import UpstreamTransport
from sync_gateway.couch.upstream import Upstream
from sync_gateway.errors import (
    AccountLocked,
    CouchError,
    CouchUnavailable,
    DocumentNotFound,
    RevisionConflict,
    Unauthorized,
)
from sync_gateway.retry import Backoff

log = structlog.get_logger(__name__)

Seq = Any  # opaque: an int on pouchdb-server, a string on CouchDB
Doc = dict[str, Any]


class _Default(enum.Enum):
    token = 0


_DEFAULT = _Default.token

_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}


@dataclass(frozen=True)
class ChangesBatch:
    results: list[dict[str, Any]]
    last_seq: Seq


@dataclass(frozen=True)
class BulkResult:
    """Outcome of one document of a ``_bulk_docs`` call, matched by id (results may come back reordered)."""

    id: str
    rev: str | None
    error: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def conflict(self) -> bool:
        return self.error == "conflict"


def _quote(part: str) -> str:
    return quote(part, safe="")


def doc_path(db: str, doc_id: str) -> str:
    """URL path of a document; design and local docs keep their slash."""
    for prefix in ("_design/", "_local/"):
        if doc_id.startswith(prefix):
            return f"/{_quote(db)}/{prefix}{_quote(doc_id[len(prefix) :])}"
    return f"/{_quote(db)}/{_quote(doc_id)}"


class CouchClient:
    """One connection pool to one CouchDB server, authenticated as the gateway's admin."""

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        timeout: float = 30.0,
        retries: int | None = 5,
        max_delay: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._retries = retries
        self._backoff = Backoff(base=0.2, cap=max_delay)
        auth: httpx.BasicAuth | None = None
        if transport is None:  # the gateway's own pool, which sends the credentials itself
            origin = urlsplit(self.url)._replace(path="", query="", fragment="")
            transport = UpstreamTransport(
                Upstream(
                    urlunsplit(origin),
                    user,
                    password,
                    max_connections=2000,
                    max_idle=32,
                    read_timeout=timeout,
                    keep_idle=5.0,
                )
            )
        elif user:  # a given transport (tests): httpx adds them
            auth = httpx.BasicAuth(user, password)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            auth=auth,
            headers=_HEADERS,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
        self._caps: ServerCapabilities | None = None

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CouchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int | _Default | None = _DEFAULT,
        timeout: float | None = None,
        expect: Iterable[int] = (),
    ) -> httpx.Response:
        """Send one request, retrying transient failures; raise the matching CouchError otherwise.

        Status codes in ``expect`` are returned instead of raised (e.g. 404 for "maybe missing", 409).
        """
        max_tries = self._retries if isinstance(retries, _Default) else retries
        attempt = 0
        encoded = _encode_params(params)
        while True:
            try:
                kwargs: dict[str, Any] = {"params": encoded, "headers": headers}
                if json_body is not None:
                    kwargs["content"] = json.dumps(json_body, separators=(",", ":")).encode()
                    kwargs["headers"] = {"Content-Type": "application/json", **(headers or {})}
                elif content is not None:
                    kwargs["content"] = content
                if timeout is not None:
                    kwargs["timeout"] = httpx.Timeout(timeout, connect=5.0)
                started = time.perf_counter()
                response = await self._http.request(method, path, **kwargs)
                metrics.observe_couch(method, path, response.status_code, time.perf_counter() - started)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                metrics.observe_couch(method, path, "error", time.perf_counter() - started)
                error: CouchError = CouchUnavailable(f"{method} {_redact(path)}: {type(exc).__name__}")
                cause: BaseException | None = exc
            else:
                status = response.status_code
                if status < 400 or status in expect:
                    return response
                if status < 500:
                    raise _error_for(method, path, response)
                error, cause = CouchUnavailable(f"{method} {_redact(path)}: HTTP {status}", status), None
            attempt += 1
            if max_tries is not None and attempt > max_tries:
                raise error from cause
            delay = self._backoff.delay(attempt - 1)
            log.warning("couch.retrying", method=method, path=_redact(path), attempt=attempt, error=str(error))
            await asyncio.sleep(delay)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        return jsontext.loads(response.content)

    # ------------------------------------------------------------------------------------------ server

    async def capabilities(self) -> ServerCapabilities:
        if self._caps is None:
            self._caps = ServerCapabilities.from_root(await self.json("GET", "/"))
        return self._caps

    async def verify_admin(self) -> ServerCapabilities:
        """Start-up check: the server answers and accepts our credentials as an admin. Raises one error whose
        message says what is wrong and what to check (unreachable, refused, locked, not an admin)."""
        where = _public_url(self.url)
        try:
            session = await self.json("GET", "/_session")
        except AccountLocked as exc:
            raise AccountLocked(
                f"CouchDB at {where} has locked the account after repeated failed logins; fix SYNC_COUCH_PASSWORD "
                "and wait for the lock to expire (CouchDB 3.4+: 5 minutes)",
                exc.status,
            ) from exc
        except Unauthorized as exc:
            raise Unauthorized(
                f"CouchDB at {where} refused the credentials (HTTP {exc.status}); check SYNC_COUCH_USER and "
                "SYNC_COUCH_PASSWORD",
                exc.status,
            ) from exc
        except CouchUnavailable as exc:
            raise CouchUnavailable(
                f"cannot reach CouchDB at {where} ({exc}); check SYNC_COUCH_URL and that the server runs", exc.status
            ) from exc
        ctx = session.get("userCtx") or {}
        if ctx.get("name") is None:
            raise Unauthorized(
                f"CouchDB at {where} did not accept the credentials (anonymous session); check SYNC_COUCH_USER "
                "and SYNC_COUCH_PASSWORD",
                401,
            )
        if "_admin" not in (ctx.get("roles") or []):
            raise Unauthorized(f"CouchDB user {ctx.get('name')!r} at {where} is not a server admin", 403)
        return await self.capabilities()

    async def ping(self) -> bool:
        """True when the server answers ``GET /`` right now (no retries)."""
        try:
            await self.request("GET", "/", retries=0, timeout=3.0)
        except CouchError:
            return False
        return True

    # ------------------------------------------------------------------------------------------ databases

    async def ensure_db(self, db: str) -> bool:
        """Create ``db`` if missing; True when it was created."""
        response = await self.request("PUT", f"/{_quote(db)}", expect=(412,))
        return response.status_code != 412

    async def db_exists(self, db: str) -> bool:
        response = await self.request("HEAD", f"/{_quote(db)}", expect=(404,))
        return response.status_code != 404

    async def delete_db(self, db: str) -> None:
        await self.request("DELETE", f"/{_quote(db)}", expect=(404,))

    async def db_info(self, db: str) -> Doc:
        result: Doc = await self.json("GET", f"/{_quote(db)}")
        return result

    async def get_security(self, db: str) -> Doc:
        result: Doc = await self.json("GET", f"/{_quote(db)}/_security")
        return result

    async def put_security(self, db: str, security: Mapping[str, Any]) -> None:
        await self.request("PUT", f"/{_quote(db)}/_security", json_body=security)

    # ------------------------------------------------------------------------------------------ documents

    async def get(self, db: str, doc_id: str, **params: Any) -> Doc:
        response = await self.request("GET", doc_path(db, doc_id), params=params)
        result: Doc = jsontext.loads(response.content)
        return result

    async def get_or_none(self, db: str, doc_id: str, **params: Any) -> Doc | None:
        response = await self.request("GET", doc_path(db, doc_id), params=params, expect=(404,))
        if response.status_code == 404:
            return None
        result: Doc = jsontext.loads(response.content)
        return result

    async def put(self, db: str, doc: Mapping[str, Any]) -> str:
        """Write one document; raises RevisionConflict on a stale ``_rev``. Returns the new rev."""
        result = await self.json("PUT", doc_path(db, str(doc["_id"])), json_body=doc)
        return str(result["rev"])

    async def delete(self, db: str, doc_id: str, rev: str) -> str:
        result = await self.json("DELETE", doc_path(db, doc_id), params={"rev": rev})
        return str(result["rev"])

    async def bulk_docs(
        self, db: str, docs: Sequence[Mapping[str, Any]], *, new_edits: bool = True
    ) -> dict[str, BulkResult]:
        """Write many documents in one request; results keyed by document id."""
        if not docs:
            return {}
        body: dict[str, Any] = {"docs": list(docs)}
        if not new_edits:
            body["new_edits"] = False
        rows = await self.json("POST", f"/{_quote(db)}/_bulk_docs", json_body=body)
        results: dict[str, BulkResult] = {}
        for row in rows:
            results[str(row.get("id"))] = BulkResult(
                id=str(row.get("id")), rev=row.get("rev"), error=row.get("error"), reason=row.get("reason")
            )
        return results

    async def all_docs(
        self, db: str, *, keys: Sequence[str] | None = None, include_docs: bool = False, **params: Any
    ) -> list[dict[str, Any]]:
        """Rows of ``_all_docs``; with ``keys`` missing ids come back as rows carrying ``error``."""
        query = {"include_docs": include_docs, **params}
        path = f"/{_quote(db)}/_all_docs"
        if keys is not None:
            if not keys:
                return []
            data = await self.json("POST", path, params=query, json_body={"keys": list(keys)})
        else:
            data = await self.json("GET", path, params=query)
        rows: list[dict[str, Any]] = data["rows"]
        return rows

    async def docs_by_id(self, db: str, ids: Sequence[str]) -> dict[str, Doc]:
        """Existing, non-deleted documents among ``ids``."""
        found: dict[str, Doc] = {}
        for row in await self.all_docs(db, keys=ids, include_docs=True):
            doc = row.get("doc")
            if doc and not row.get("error"):
                found[str(row["id"])] = doc
        return found

    async def revs_diff(self, db: str, revs: Mapping[str, Sequence[str]]) -> Doc:
        result: Doc = await self.json("POST", f"/{_quote(db)}/_revs_diff", json_body=dict(revs))
        return result

    async def view(self, db: str, ddoc: str, view: str, **params: Any) -> Doc:
        result: Doc = await self.json(
            "GET", f"/{_quote(db)}/_design/{_quote(ddoc)}/_view/{_quote(view)}", params=params
        )
        return result

    # ------------------------------------------------------------------------------------------ _local

    async def get_local(self, db: str, name: str) -> Doc | None:
        return await self.get_or_none(db, f"_local/{name}")

    async def put_local(self, db: str, name: str, body: Mapping[str, Any]) -> None:
        current = await self.get_local(db, name)
        doc = {**body, "_id": f"_local/{name}"}
        if current:
            doc["_rev"] = current["_rev"]
        await self.put(db, doc)

    # ------------------------------------------------------------------------------------------ users

    async def upsert_user(self, name: str, password: str | None, roles: Sequence[str] = ()) -> None:
        """Create or update a CouchDB user in ``_users``; ``password=None`` keeps the current one."""
        doc_id = f"org.couchdb.user:{name}"
        current = await self.get_or_none("_users", doc_id)
        doc: dict[str, Any] = {**(current or {}), "_id": doc_id, "name": name, "type": "user", "roles": list(roles)}
        if password is not None:
            doc["password"] = password
        await self.put("_users", doc)

    # ------------------------------------------------------------------------------------------ changes

    async def changes(
        self,
        db: str,
        *,
        since: Seq = None,
        limit: int | None = None,
        include_docs: bool = True,
        feed: str = "normal",
        timeout: float | None = None,
        selector: dict[str, Any] | None = None,
        **params: Any,
    ) -> ChangesBatch:
        """One page of ``_changes`` (``normal`` or ``longpoll``).

        ``timeout`` is sent as CouchDB's ``timeout`` (CouchDB 3 then answers an empty page when it expires)
        and is also our own read timeout, 5 s later: pouchdb-server ignores CouchDB's, so a quiet longpoll
        there just ends with no results when ours expires. No ``heartbeat`` is sent: CouchDB 3 refuses
        ``heartbeat=false`` with 400 and a page read as one JSON body has no use for heartbeat newlines.
        """
        query: dict[str, Any] = {"include_docs": include_docs, "feed": feed, **params}
        if since is not None:
            query["since"] = since
        if limit is not None:
            query["limit"] = limit
        if feed == "longpoll" and timeout is not None:
            query["timeout"] = int(timeout * 1000)
        method, body = "GET", None
        if selector is not None:
            query["filter"] = "_selector"
            if (await self.capabilities()).selector_in_body:
                method, body = "POST", {"selector": selector}
            else:  # pouchdb-server: only as a URL parameter (a body selector crashes it)
                query["selector"] = selector
        try:
            response = await self.request(
                method,
                f"/{_quote(db)}/_changes",
                json_body=body,
                params=query,
                timeout=None if timeout is None else timeout + 5.0,
                retries=0 if feed == "longpoll" else _DEFAULT,
            )
        except CouchUnavailable as exc:
            if feed == "longpoll" and isinstance(exc.__cause__, httpx.ReadTimeout):
                return ChangesBatch(results=[], last_seq=since)
            raise
        data = jsontext.loads(response.content)
        return ChangesBatch(results=list(data.get("results", [])), last_seq=data.get("last_seq", since))

    async def db_updates(self, *, since: Seq = None, timeout: float = 60.0) -> ChangesBatch:
        """One longpoll page of the server's ``_db_updates`` (CouchDB 3: which databases changed, backed by
        ``_global_changes``). Rows are ``{"db_name", "type", "seq"}``; ``since=None`` starts at ``now``."""
        params = {"feed": "longpoll", "timeout": int(timeout * 1000), "since": "now" if since is None else since}
        try:
            response = await self.request("GET", "/_db_updates", params=params, timeout=timeout + 5.0, retries=0)
        except CouchUnavailable as exc:
            if isinstance(exc.__cause__, httpx.ReadTimeout):
                return ChangesBatch(results=[], last_seq=since)
            raise
        data = jsontext.loads(response.content)
        return ChangesBatch(results=list(data.get("results", [])), last_seq=data.get("last_seq", since))


def _encode_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """CouchDB wants JSON for keys and booleans: ``true``, ``"key"``; sequences pass through as given."""
    if not params:
        return {}
    encoded: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key in {"key", "keys", "startkey", "endkey", "start_key", "end_key"}:
            encoded[key] = json.dumps(value)
        elif isinstance(value, bool):
            encoded[key] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            encoded[key] = json.dumps(value)
        else:
            encoded[key] = str(value)
    return encoded


def _public_url(url: str) -> str:
    """A server URL without credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _redact(path: str) -> str:
    """Paths never hold credentials, but keep query strings (which may hold ids) out of logs."""
    return path.split("?", 1)[0]


def _error_for(method: str, path: str, response: httpx.Response) -> CouchError:
    try:
        body = response.json()
        reason = f"{body.get('error')}: {body.get('reason')}"
    except (ValueError, AttributeError):
        reason = response.text[:200]
    message = f"{method} {_redact(path)}: HTTP {response.status_code} {reason}"
    status = response.status_code
    if status == 404:
        return DocumentNotFound(message, status)
    if status == 409:
        return RevisionConflict(message, status)
    if status == 403 and "temporarily locked" in reason.lower():
        return AccountLocked(message, status)
    if status in (401, 403):
        return Unauthorized(message, status)
    return CouchError(message, status)
