"""Assembles one gateway process: clients, stores, the workers of its roles, and the admin API.

All durable state is in CouchDB, so a process can be killed at any moment and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
import uvicorn

from sync_gateway.config import Settings
from sync_gateway.conflicts.pipeline import ConflictPipeline, ReviewSink
from sync_gateway.conflicts.resolver import Resolver
from sync_gateway.conflicts.stale import StaleBaseDetector
from sync_gateway.contracts import ErpConnector
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.distribute.distributor import Distributor
from sync_gateway.distribute.mirror import MirrorPuller
from sync_gateway.eventlog.store import EventLog
from sync_gateway.health import serve_health
from sync_gateway.ingest.business import BusinessRules
from sync_gateway.ingest.validation import DocumentValidator
from sync_gateway.ingest.worker import IngestWorker
from sync_gateway.plugins import load_connector, load_handlers
from sync_gateway.project.deadletters import DeadLetters
from sync_gateway.project.worker import Projector
from sync_gateway.receipts import ReceiptStore
from sync_gateway.users import UserRegistry

log = structlog.get_logger(__name__)

SYSTEM_DBS = ("events", "conflicts", "registry", "checkpoints", "mirror")


class Gateway:
    """The services of one process. Workers are created only for the roles it runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        password = settings.couch_password.get_secret_value()
        # workers retry CouchDB forever (they must outlive a restart); API calls give up after a few tries
        self.couch = CouchClient(
            settings.couch_url, settings.couch_user, password, retries=None, max_delay=settings.retry_max_delay_s
        )
        self.api_couch = CouchClient(settings.couch_url, settings.couch_user, password, retries=2)
        self.registry = UserRegistry(self.api_couch, settings.db("registry"))
        self.events = EventLog(self.api_couch, settings.db("events"))
        self.dead_letters = DeadLetters(self.api_couch, settings.db("conflicts"))
        self.checkpoints = Checkpoints(self.api_couch, settings.db("checkpoints"))
        self.validator = DocumentValidator(max_doc_bytes=settings.max_doc_bytes)
        self.connector: ErpConnector | None = (
            load_connector(settings.connector, settings.connector_options)
            if {"project", "distribute"} & set(settings.roles)
            else None
        )
        self._resolver = Resolver(self.api_couch, self.events)
        self.handlers = load_handlers(settings.handlers)  # unknown names fail here, at start-up
        self.ingest: IngestWorker | None = None
        self.projector: Projector | None = None
        self.mirror: MirrorPuller | None = None
        self.distributor: Distributor | None = None
        self.started_at = time.time()
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    async def setup(self) -> None:
        """Create the system databases and design documents; safe to run on every start."""
        await self.couch.ensure_db("_users")
        for name in SYSTEM_DBS:
            await self.couch.ensure_db(self.settings.db(name))
        await EventLog(self.couch, self.settings.db("events")).setup()
        if self.connector is not None:
            await self.connector.start()

    def _build_workers(self) -> None:
        s = self.settings
        worker_checkpoints = Checkpoints(self.couch, s.db("checkpoints"))
        worker_events = EventLog(self.couch, s.db("events"))
        receipts = ReceiptStore(self.couch)
        if "ingest" in s.roles:
            pipeline = ConflictPipeline(
                self.couch, self.handlers, Resolver(self.couch, worker_events, receipts), self.review_queue()
            )
            self.ingest = IngestWorker(
                self.couch,
                UserRegistry(self.couch, s.db("registry")),
                worker_events,
                receipts,
                worker_checkpoints,
                self.validator,
                conflicts=pipeline,
                batch_size=s.ingest_batch_size,
                read_timeout=s.feed_read_timeout_s,
                linger=s.linger_s,
                accepted_receipt_delay=s.accepted_receipt_delay_s if "project" in s.roles else 0.0,
                business=BusinessRules(self.couch, s.db("mirror"), worker_events, s.enforced_rules),
                stale=StaleBaseDetector(self.couch, s.db("mirror"), worker_events),
            )
        if "project" in s.roles and self.connector is not None:
            self.projector = Projector(
                self.couch,
                self.connector,
                worker_events,
                receipts,
                DeadLetters(self.couch, s.db("conflicts"), read_timeout=s.feed_read_timeout_s),
                worker_checkpoints,
                batch_size=s.project_batch_size,
                read_timeout=s.feed_read_timeout_s,
                max_delay=s.retry_max_delay_s,
                linger=s.linger_s,
            )

        if "distribute" in s.roles and self.connector is not None:
            self.mirror = MirrorPuller(
                self.couch, self.connector, s.db("mirror"), worker_checkpoints, interval=s.pull_interval_s
            )
        if "distribute" in s.roles:
            from sync_gateway.profiles import load_profiles
            from sync_gateway.rules import config_documents

            self.distributor = Distributor(
                self.couch,
                worker_checkpoints,
                registry_db=s.db("registry"),
                mirror_db=s.db("mirror"),
                profiles=load_profiles([s.profiles_path()]),
                config_docs=config_documents(),
                batch_size=s.distribute_batch_size,
                read_timeout=s.feed_read_timeout_s,
                max_delay=s.retry_max_delay_s,
            )

    async def run(self) -> None:
        """Run every role of this process until cancelled (Ctrl-C, SIGTERM)."""
        await self.setup()
        self._build_workers()
        if self.ingest is not None:
            self._tasks["ingest"] = asyncio.create_task(self.ingest.run(), name="ingest")
        if self.projector is not None:
            self._tasks["project"] = asyncio.create_task(self.projector.run(), name="project")
        if self.mirror is not None:
            self._tasks["distribute"] = asyncio.create_task(self.mirror.run(), name="distribute")
        if self.distributor is not None:
            self._tasks["distributor"] = asyncio.create_task(self.distributor.run(), name="distributor")
        if "api" in self.settings.roles:
            from sync_gateway.api.app import create_app

            config = uvicorn.Config(
                create_app(self),
                host=self.settings.api_host,
                port=self.settings.api_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
            server = uvicorn.Server(config)
            self._tasks["api"] = asyncio.create_task(server.serve(), name="api")
        if self.settings.health_port:
            self._tasks["health"] = asyncio.create_task(serve_health(self), name="health")
        log.info("gateway.started", roles=self.settings.roles, connector=self.settings.connector)
        try:
            done, _ = await asyncio.wait(self._tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a worker that died raises here and stops the process loudly
            log.info("gateway.stopping", finished=[t.get_name() for t in done])
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.connector is not None:
            await self.connector.close()
        await self.couch.close()
        await self.api_couch.close()

    async def conflict_applier(self, item: dict[str, Any], winner: dict[str, Any], by: str) -> dict[str, Any]:
        """Apply a reviewer's resolution of a review item (called by the review queue)."""
        return await self._resolver.apply(item, winner, by)

    async def conflict_decliner(self, item: dict[str, Any], by: str, note: str) -> None:
        """A reviewer rejected an item: refuse its transaction where that means something (stale base, business)."""
        await self._resolver.decline(item, by, note)

    def review_queue(self) -> ReviewSink | None:
        """The review queue, once it exists in this build (``sync_gateway.review``)."""
        try:
            from sync_gateway.review.queue import ReviewQueue  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            return None
        queue: ReviewSink = ReviewQueue(self.couch, self.settings.db("conflicts"))
        return queue

    def workers_alive(self) -> dict[str, bool]:
        alive = {name: not task.done() for name, task in self._tasks.items() if name not in ("api", "health")}
        if self.ingest is not None:
            alive["ingest"] = alive.get("ingest", True) and self.ingest.alive()
        return alive
