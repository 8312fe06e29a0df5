"""A real PouchDB device (``tests/devices/device.js`` in Node) driven from async Python tests.

One :class:`Device` is one Node process holding any number of named in-memory PouchDB databases, so a
single process can play several phones. Requests travel as JSON lines and may run concurrently.

Devices replicate through the gateway's edge with the device client (``clients/js``): ``edge_phone`` enrols a
phone once, ``edge_replicate`` / ``edge_sync_live`` sync through it; ``tests/support/crew.py``'s ``FieldUser``
wraps that for a provisioned user. ``replicate`` / ``sync_live`` talk to a CouchDB URL directly: only for
tests of the harness itself and for writes that bypass the edge on purpose (each such call says why).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVICE_SCRIPT = REPO_ROOT / "tests" / "devices" / "device.js"

Direction = Literal["push", "pull", "both"]

_EXIT_GRACE_S = 5.0
_STREAM_LIMIT = 64 * 1024 * 1024  # one response line can carry inline attachments
_EDGE_HANDLE = "edge-sync-"  # device.js names live syncs through the edge so


class DeviceError(Exception):
    """An operation failed inside the device (PouchDB error, replication error, wait_for timeout).

    ``status`` is the HTTP-like status PouchDB reports (401 for bad credentials, 404 for a missing doc,
    409 for a conflict, 408 for a device-side timeout); ``details`` holds extra fields such as
    ``last_doc`` (wait_for) or ``result`` (a failed replication's summary).
    """

    def __init__(self, name: str, message: str, status: int | None, details: Mapping[str, Any] | None = None):
        super().__init__(f"{name} ({status}): {message}")
        self.name = name
        self.message = message
        self.status = status
        self.details: dict[str, Any] = dict(details or {})


class Device:
    """Async context manager owning one ``node tests/devices/device.js`` process.

    ``call_timeout`` bounds every request (seconds) so a stuck device fails the test instead of hanging it;
    ``replicate`` and ``wait_for`` extend it by their own timeouts.
    """

    def __init__(self, *, call_timeout: float = 60.0, node: str | None = None) -> None:
        self.call_timeout = call_timeout
        self._node = node or shutil.which("node") or "node"
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._exit_error: DeviceError | None = None
        self._edge_clients: dict[tuple[str, str, str], str] = {}  # (edge url, user, phone) -> enrolled client

    @property
    def pid(self) -> int | None:
        """The Node process id, while it runs."""
        return self._proc.pid if self._proc else None

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(
            self._node,
            str(DEVICE_SCRIPT),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_STREAM_LIMIT,
        )
        self._reader = asyncio.create_task(self._read_responses(), name=f"device-{self._proc.pid}-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Ask the device to shut down; kill it by its PID if it has not exited within 5 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(DeviceError, OSError, TimeoutError):
                await self._call("shutdown", _timeout=_EXIT_GRACE_S)
        try:
            await asyncio.wait_for(proc.wait(), _EXIT_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # SIGKILL to this process's own PID
            await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
            with contextlib.suppress(OSError):
                await proc.stdin.wait_closed()
        if self._reader is not None:
            await self._reader
        self._proc = None

    # --- local databases -------------------------------------------------------------------------------

    async def open(self, db: str) -> dict[str, Any]:
        """Create (or reuse) the named local database; returns its info."""
        result: dict[str, Any] = await self._call("open", db=db)
        return result

    async def info(self, db: str) -> dict[str, Any]:
        """PouchDB ``info()`` of a local database (doc_count, update_seq, ...)."""
        result: dict[str, Any] = await self._call("info", db=db)
        return result

    async def put(self, db: str, doc: Mapping[str, Any]) -> dict[str, str]:
        """Write one document; returns ``{"id", "rev"}``. A stale ``_rev`` raises DeviceError 409."""
        result: dict[str, str] = await self._call("put", db=db, doc=dict(doc))
        return result

    async def bulk(self, db: str, docs: list[Mapping[str, Any]], **opts: Any) -> list[dict[str, Any]]:
        """``bulkDocs``: one result per doc, either ``{ok, id, rev}`` or an error object."""
        result: list[dict[str, Any]] = await self._call("bulk", db=db, docs=[dict(d) for d in docs], opts=opts)
        return result

    async def get(self, db: str, doc_id: str, **opts: Any) -> dict[str, Any]:
        """Read a document; ``opts`` are PouchDB's (``conflicts=True``, ``attachments=True``, ``revs=True``,
        ``open_revs="all"``...). Inline attachment data comes back base64-encoded."""
        result: dict[str, Any] = await self._call("get", db=db, doc_id=doc_id, opts=opts)
        return result

    async def remove(self, db: str, doc_id: str, rev: str) -> dict[str, str]:
        """Delete a document revision; returns ``{"id", "rev"}`` of the tombstone."""
        result: dict[str, str] = await self._call("remove", db=db, doc_id=doc_id, rev=rev)
        return result

    async def put_attachment(
        self, db: str, doc_id: str, rev: str | None, name: str, content_type: str, data: bytes
    ) -> dict[str, str]:
        """Attach ``data`` to a document (``rev=None`` creates the document); returns ``{"id", "rev"}``."""
        result: dict[str, str] = await self._call(
            "put_attachment",
            db=db,
            doc_id=doc_id,
            rev=rev,
            name=name,
            content_type=content_type,
            data_base64=base64.b64encode(data).decode("ascii"),
        )
        return result

    async def get_attachment(self, db: str, doc_id: str, name: str) -> bytes:
        """The attachment's bytes."""
        encoded: str = await self._call("get_attachment", db=db, doc_id=doc_id, name=name)
        return base64.b64decode(encoded)

    async def all_docs(self, db: str, **opts: Any) -> dict[str, Any]:
        """``allDocs(opts)``, e.g. ``include_docs=True``, ``keys=[...]``."""
        result: dict[str, Any] = await self._call("all_docs", db=db, opts=opts)
        return result

    async def changes(self, db: str, **opts: Any) -> dict[str, Any]:
        """A one-shot local changes feed (``since``, ``include_docs``...); use wait_for to wait."""
        result: dict[str, Any] = await self._call("changes", db=db, opts=opts)
        return result

    async def destroy(self, db: str) -> None:
        """Stop the database's live syncs and delete it from the device."""
        await self._call("destroy", db=db)

    # --- replication ------------------------------------------------------------------------------------

    async def replicate(
        self,
        db: str,
        url: str,
        user: str | None,
        password: str | None,
        direction: Direction = "both",
        timeout: float = 30.0,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """One-shot replication with the remote database ``url`` as ``user``, bypassing the edge
        (``batch_size``: PouchDB's documents per batch, its default 100 when None).

        Returns the summary ``{ok, docs_read, docs_written, doc_write_failures, errors, ...}`` (for
        ``both`` also ``push`` and ``pull``); per-document rejections (403 from a validate function)
        are in ``errors``. A failed replication (401 bad credentials, unreachable server) or one not
        finished within ``timeout`` seconds raises DeviceError.
        """
        result: dict[str, Any] = await self._call(
            "replicate",
            db=db,
            remote_url=url,
            username=user,
            password=password,
            direction=direction,
            timeout_ms=int(timeout * 1000),
            batch_size=batch_size,
            _timeout=timeout + self.call_timeout,
        )
        return result

    async def sync_live(self, db: str, url: str, user: str | None, password: str | None) -> str:
        """Start a live, retrying two-way sync with ``url`` directly (bypassing the edge); returns the handle
        for sync_status / sync_stop."""
        handle: str = await self._call("sync_live", db=db, remote_url=url, username=user, password=password)
        return handle

    async def sync_status(self, handle: str) -> dict[str, Any]:
        """``{state, last_error, docs_read, docs_written}`` of a live sync (direct or through the edge)."""
        if handle.startswith(_EDGE_HANDLE):
            return await self.edge_sync_status(handle)
        result: dict[str, Any] = await self._call("sync_status", handle=handle)
        return result

    async def sync_stop(self, handle: str) -> dict[str, Any]:
        """Cancel a live sync (direct or through the edge) and wait until it has stopped; returns its final
        status."""
        if handle.startswith(_EDGE_HANDLE):
            return await self.edge_sync_stop(handle)
        result: dict[str, Any] = await self._call("sync_stop", handle=handle)
        return result

    async def wait_for(
        self,
        db: str,
        doc_id: str,
        timeout: float = 20.0,
        predicate: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Wait until doc ``doc_id`` exists locally with every given top-level field equal to its value.

        Fields come as keyword arguments, or in ``predicate`` for names that clash with the parameters.
        Returns the matching document; raises DeviceError (``timeout``, 408) naming the last seen
        version, which is also in ``details["last_doc"]``.
        """
        wanted = {**(predicate or {}), **fields}
        doc: dict[str, Any] = await self._call(
            "wait_for",
            db=db,
            doc_id=doc_id,
            predicate=wanted,
            timeout_ms=int(timeout * 1000),
            _timeout=timeout + self.call_timeout,
        )
        return doc

    # --- edge mode: enrol with the gateway's edge and sync through it with the device client (clients/js) -------

    async def edge_enrol(
        self,
        client: str,
        edge_url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        code: str | None = None,
        id_token: str | None = None,
        device_name: str | None = None,
        platform: str = "node",
    ) -> dict[str, Any]:
        """Enrol the phone ``client`` by password, one-time code or OIDC ID token; returns ``{device_id, user}``."""
        result: dict[str, Any] = await self._call(
            "edge_enrol",
            client=client,
            url=edge_url,
            user=user,
            password=password,
            code=code,
            id_token=id_token,
            device_name=device_name,
            platform=platform,
        )
        return result

    async def edge_phone(
        self,
        phone: str,
        edge_url: str,
        user: str,
        password: str | None = None,
        *,
        code: str | None = None,
        platform: str = "node",
    ) -> str:
        """The edge client of the phone ``phone`` of ``user`` on the edge at ``edge_url``, enrolled (by
        password, or by the one-time ``code``) on first use; returns the client name for edge_replicate and
        edge_sync_live. One enrolled phone may replicate any number of local databases."""
        key = (edge_url, user, phone)
        client = self._edge_clients.get(key)
        if client is None:
            client = f"{user}/{phone}/{len(self._edge_clients) + 1}"
            await self.edge_enrol(
                client,
                edge_url,
                user=None if code else user,
                password=None if code else password,
                code=code,
                device_name=f"{phone} of {user}",
                platform=platform,
            )
            self._edge_clients[key] = client
        return client

    async def edge_session(self, client: str) -> dict[str, Any]:
        """The client's tokens and state (``active``, ``revoked``, ``wipe_required``, ``wiped``)."""
        result: dict[str, Any] = await self._call("edge_session", client=client)
        return result

    async def edge_replicate(
        self, db: str, client: str, direction: Direction = "both", timeout: float = 30.0, batch_size: int | None = None
    ) -> dict[str, Any]:
        """One-shot replication through the edge; when the edge asks for a wipe the device performs it and
        the result is ``{wiped: true, mode}``. A refused replication raises DeviceError with the edge's code."""
        result: dict[str, Any] = await self._call(
            "edge_replicate",
            db=db,
            client=client,
            direction=direction,
            timeout_ms=int(timeout * 1000),
            batch_size=batch_size,
            _timeout=timeout + self.call_timeout,
        )
        return result

    async def edge_sync_live(self, db: str, client: str) -> str:
        """A live two-way sync through the edge that obeys revocation and wipe requests; returns a handle."""
        handle: str = await self._call("edge_sync_live", db=db, client=client)
        return handle

    async def edge_sync_status(self, handle: str) -> dict[str, Any]:
        """``{state, last_error, docs_read, docs_written}``; state ``revoked``, ``wiping``, ``wiped`` too."""
        result: dict[str, Any] = await self._call("edge_sync_status", handle=handle)
        return result

    async def edge_sync_stop(self, handle: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("edge_sync_stop", handle=handle)
        return result

    async def edge_policy(self, db: str, client: str, now_ms: int) -> dict[str, Any]:
        """Enforce ``config:device_policy`` at the given time: ``{action: ok|lock|wipe, offline_days}``."""
        result: dict[str, Any] = await self._call("edge_policy", db=db, client=client, now_ms=now_ms)
        return result

    # --- protocol ---------------------------------------------------------------------------------------

    async def _call(self, op: str, _timeout: float | None = None, **args: Any) -> Any:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise DeviceError("not_started", "use the Device as an async context manager", None)
        if self._exit_error is not None:
            raise self._exit_error
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps({"id": request_id, "op": op, **args}) + "\n"
        try:
            async with self._write_lock:
                proc.stdin.write(line.encode())
                await proc.stdin.drain()
            return await asyncio.wait_for(future, _timeout or self.call_timeout)
        except TimeoutError:
            raise DeviceError("no_response", f"device gave no answer to '{op}' in time", None) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read_responses(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        while line := await stdout.readline():
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            future = self._pending.get(message.get("id"))
            if future is None or future.done():
                continue
            if message.get("ok"):
                future.set_result(message.get("result"))
            else:
                error = dict(message.get("error") or {})
                name = str(error.pop("name", "error"))
                text = str(error.pop("message", ""))
                status = error.pop("status", None)
                future.set_exception(DeviceError(name, text, status, error))
        self._exit_error = DeviceError("device_exited", "the device process has exited", None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._exit_error)
