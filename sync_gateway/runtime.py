"""Assembles one gateway process: clients, stores, the workers of its roles, and the admin API.

All durable state is in CouchDB, so a process can be killed at any moment and started again. Every
long-running loop runs under one :class:`Supervisor` (a crashed loop is logged and restarted with backoff);
SIGTERM or SIGINT stops them all within ``SYNC_SHUTDOWN_GRACE_S``, each follower saving its checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

from sync_gateway.accounts.people import People
from sync_gateway.api.app import create_app
from sync_gateway.api.services import ApiServices
from sync_gateway.config import Settings
from sync_gateway.conflicts.pipeline import ConflictPipeline
from sync_gateway.conflicts.resolver import Resolver
from sync_gateway.conflicts.stale import StaleBaseDetector
from sync_gateway.contracts import ErpConnector
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.couch.wakemarks import WakeMarks
from sync_gateway.dbsecurity import ensure_security
from sync_gateway.distribute.distributor import Distributor
from sync_gateway.distribute.mirror import MirrorPuller
from sync_gateway.edge.app import create_edge_app
from sync_gateway.edge.build import build_edge
from sync_gateway.edge.devices import DeviceRegistry, device_policy_document
from sync_gateway.edge.events import DeviceEvents, EventRecovery, OfflineCheck
from sync_gateway.edge.service import Edge
from sync_gateway.edge.webhooks import Outbox, WebhookSender, endpoints_from
from sync_gateway.eventlog.store import EventLog
from sync_gateway.health import ProcessView, serve_health
from sync_gateway.http_server import quiet_server
from sync_gateway.ingest.business import BusinessRules
from sync_gateway.ingest.worker import IngestWorker
from sync_gateway.plugins import load_connector, load_handlers
from sync_gateway.profiles import load_profiles
from sync_gateway.project.deadletters import DeadLetters
from sync_gateway.project.worker import Projector
from sync_gateway.quarantine import Quarantine
from sync_gateway.receipts import ReceiptStore
from sync_gateway.retry import Backoff
from sync_gateway.review.facts import ReviewFacts
from sync_gateway.review.queue import ReviewQueue
from sync_gateway.rules import config_documents
from sync_gateway.supervisor import Supervisor
from sync_gateway.users import UserRegistry
from sync_gateway.validation.documents import DocumentValidator

log = structlog.get_logger(__name__)

SYSTEM_DBS = ("events", "conflicts", "registry", "checkpoints", "mirror", "accounts", "audit", "outbox")
WAKEMARKS_DB = "wakeups"  # servers without _db_updates: the edge's wake-up marks (sync_gateway.couch.wakemarks)


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
        self.people = People(self.api_couch, settings)  # accounts, tokens, audit trail, OIDC sign-in
        self.devices = DeviceRegistry(self.api_couch, settings.db("registry"))
        # device events: the audit trail and the webhook outbox (sent by the sender loop, see _start_loops)
        endpoints = endpoints_from(settings.webhook_urls, settings.webhook_secret.get_secret_value())
        self.outbox = Outbox(self.api_couch, settings.db("outbox"), endpoints)
        self.device_events = DeviceEvents(self.outbox, self.people.audit, self.devices)
        self.webhooks: WebhookSender | None = None
        self.edge: Edge | None = None  # built in run(), after CouchDB is known to be usable
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
        self.quarantine = Quarantine(self.api_couch, settings.db("conflicts"))
        self.supervisor = Supervisor()
        self.started_at = time.time()
        self._use_wakeups = True
        self._has_db_updates = True
        self.wakemarks: WakeMarks | None = None  # the edge's wake-up marks (servers without _db_updates)
        self._api_server: uvicorn.Server | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._edge_server: uvicorn.Server | None = None
        self._edge_task: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        """Check the server and our admin account, create the system databases and design documents; safe to
        run on every start. A server we cannot use stops the start with one error that says why."""
        caps = await self.api_couch.verify_admin()
        self._use_wakeups = self.settings.ingest_wakeups != "feeds"
        self._has_db_updates = caps.has_db_updates
        await self.couch.ensure_db("_users")
        for name in SYSTEM_DBS + (() if caps.has_db_updates else (WAKEMARKS_DB,)):
            await self.couch.ensure_db(self.settings.db(name))
            await ensure_security(self.couch, self.settings.db(name))  # admins only, checked on every start
        await EventLog(self.couch, self.settings.db("events")).setup()
        await self.people.setup()
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
                supervisor=self.supervisor,
                quarantine=Quarantine(self.couch, s.db("conflicts")),
                wakeups=self._use_wakeups,
                concurrency=s.ingest_concurrency,
                db_updates=self._has_db_updates,
                marks_db=None if self._has_db_updates else s.db(WAKEMARKS_DB),
                sweep_interval=0.0 if self._has_db_updates else s.ingest_sweep_interval_s,
                sweep_rate=s.ingest_sweep_rate,
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
            self.distributor = Distributor(
                self.couch,
                worker_checkpoints,
                registry_db=s.db("registry"),
                mirror_db=s.db("mirror"),
                ledger_db=s.db("distributed"),
                profiles=load_profiles([s.profiles_path()]),
                config_docs=distributed_config(s),
                batch_size=s.distribute_batch_size,
                read_timeout=s.feed_read_timeout_s,
                max_delay=s.retry_max_delay_s,
                quarantine=Quarantine(self.couch, s.db("conflicts")),
            )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run every role of this process until ``stop`` is set, SIGTERM or SIGINT arrives, or the API ends."""
        stop = stop or asyncio.Event()
        with _stop_on_signals(stop):
            await self.setup()
            self._build_workers()
            if self._runs_edge():
                self._build_wake()
                self.edge = build_edge(
                    self.settings,
                    couch=self.api_couch,
                    watch_couch=self.couch,
                    wake=self._wake,
                    events=self.device_events,
                )
            self._start_loops()
            if "api" in self.settings.roles:
                app = create_app(self.api_services())
                self._api_server = quiet_server(app, self.settings.api_host, self.settings.api_port)
                self._api_task = asyncio.create_task(self._api_server.serve(), name="api")
            if self.edge is not None:
                edge_app = create_edge_app(self.edge)
                self._edge_server = quiet_server(edge_app, self.settings.edge_host, self.settings.edge_port)
                self._edge_task = asyncio.create_task(self._edge_server.serve(), name="edge")
            log.info("gateway.started", roles=self.settings.roles, connector=self.settings.connector)
            stopping = asyncio.create_task(stop.wait())
            try:
                waiting: set[asyncio.Task[Any]] = {stopping} | ({self._api_task} if self._api_task else set())
                waiting |= {self._edge_task} if self._edge_task else set()
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                log.info("gateway.stopping", reason="signal" if stopping in done else "api ended")
                if self._api_task in done:
                    self._api_task.result()  # an API that could not start raises here and stops the process
                if self._edge_task in done:
                    self._edge_task.result()
            finally:
                stopping.cancel()
                await self.stop()

    def _build_wake(self) -> None:
        """What a device's write through this process's edge wakes: this process's ingest at once, and on a
        server without ``_db_updates`` a wake-up mark that every ingest process follows (and that outlives a
        crash of this one)."""
        if not self._has_db_updates:
            self.wakemarks = WakeMarks(self.couch, self.settings.db(WAKEMARKS_DB))

    def _wake(self, db: str) -> None:
        if self.ingest is not None:
            self.ingest.wake(db)
        if self.wakemarks is not None:
            self.wakemarks.mark(db)

    def _runs_edge(self) -> bool:
        """The edge runs when its role is asked for. With the default roles (all) and no token secret it is
        left out with a warning, so a gateway started as before keeps starting; asked for by SYNC_ROLES, a
        missing secret stops the start."""
        s = self.settings
        if "edge" not in s.roles:
            return False
        if s.edge_token_secret.get_secret_value() or "roles" in s.model_fields_set:
            return True
        log.warning("edge.not_started", reason="SYNC_EDGE_TOKEN_SECRET is not set; set it to run the device edge")
        return False

    def _start_loops(self) -> None:
        sup = self.supervisor
        if self.ingest is not None:
            sup.start("ingest", self.ingest.run)
            sup.start("review:sweep", self._sweep_review_queue)
        if self.projector is not None:
            sup.start("project", self.projector.follow)
            sup.start("project:retries", self.projector.watch_retries)
        if self.mirror is not None:
            sup.start("distribute:mirror-pull", self.mirror.run)
        if self.distributor is not None:
            sup.start("distribute:distributor", self.distributor.run)
        if self.edge is not None:
            sup.start("edge:registry-watch", self.edge.watch_registry)
            if self.wakemarks is not None:
                sup.start("edge:wakemarks", self.wakemarks.run)
        self._start_device_event_loops()
        if self.settings.health_port:  # liveness, readiness and /metrics for every role (sync_gateway.health)
            sup.start("health", lambda: serve_health(self.process_view()))

    def _start_device_event_loops(self) -> None:
        """Processes with the api or edge role deliver the webhook outbox (claims keep several of them from
        sending one attempt twice) and, once at start, record the device events a crash left unrecorded; the
        api role looks for devices offline past the policy."""
        s = self.settings
        if {"api", "edge"} & set(s.roles):
            recovery = EventRecovery(DeviceRegistry(self.couch, s.db("registry")), self.device_events)
            self.supervisor.start("devices:event-recovery", recovery.run_once)
        if self.outbox.endpoints and {"api", "edge"} & set(s.roles):
            self.webhooks = WebhookSender(
                self.outbox.using(self.couch),
                s.webhook_secret.get_secret_value(),
                timeout_s=s.webhook_timeout_s,
                max_attempts=s.webhook_max_attempts,
                backoff=Backoff(base=s.webhook_backoff_base_s, cap=s.webhook_backoff_cap_s),
                poll_s=s.webhook_poll_s,
            )
            self.supervisor.start("webhooks", self.webhooks.run)
        if "api" in s.roles:
            offline = OfflineCheck(
                DeviceRegistry(self.couch, s.db("registry")),
                self.device_events,
                lock_after_days=s.device_lock_after_days,
                wipe_after_days=s.device_wipe_after_days,
                interval_s=s.device_offline_check_s,
            )
            self.supervisor.start("devices:offline-check", offline.run)

    async def stop(self) -> None:
        """Stop the API and every loop (followers save their checkpoints), then close the clients."""
        grace = self.settings.shutdown_grace_s
        started = time.monotonic()
        if self._api_server is not None and self._api_task is not None:
            self._api_server.should_exit = True
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._api_task), timeout=grace)
            self._api_task.cancel()
        if self._edge_server is not None and self._edge_task is not None:
            self._edge_server.should_exit = True
            if self.edge is not None:
                self.edge.feeds.close_all()  # open feeds would hold the server until the grace ends
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._edge_task), timeout=grace)
            self._edge_task.cancel()
        left = await self.supervisor.stop_all(max(0.5, grace - (time.monotonic() - started)))
        if left:
            log.warning("gateway.stop_timed_out", loops=left[:20], count=len(left))
        if self.connector is not None:
            with contextlib.suppress(Exception):
                await self.connector.close()
        await self.people.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.edge is not None:
            await self.edge.close()
        await self.couch.close()
        await self.api_couch.close()
        log.info("gateway.stopped", seconds=round(time.monotonic() - started, 2))

    def process_view(self) -> ProcessView:
        """What probes and /metrics read of this process (its loops, followers and CouchDB)."""
        return ProcessView(self.settings, self.api_couch, self.supervisor, self.ingest)

    def api_services(self) -> ApiServices:
        """What the admin API is handed: the stores over the API's client, and a review queue whose
        resolutions this process applies (a reviewer's winner written, a rejection refusing its transaction)."""
        review = ReviewQueue(
            self.api_couch,
            self.settings.db("conflicts"),
            validator=self.validator,
            applier=self._resolver.apply,
            decliner=self._resolver.decline,
            approval_limit=self.settings.approval_limit,
        )
        facts = ReviewFacts(
            self.api_couch,
            self.settings.db("mirror"),
            self.events,
            approval_limit=self.settings.approval_limit,
        )
        return ApiServices(
            settings=self.settings,
            couch=self.api_couch,
            registry=self.registry,
            people=self.people,
            devices=self.devices,
            device_events=self.device_events,
            outbox=self.outbox,
            events=self.events,
            dead_letters=self.dead_letters,
            checkpoints=self.checkpoints,
            quarantine=self.quarantine,
            review=review,
            facts=facts,
            process=self.process_view(),
            connector=self.connector,
        )

    def review_queue(self) -> ReviewQueue:
        """The review queue as the ingest's conflict pipeline writes to it."""
        return ReviewQueue(self.couch, self.settings.db("conflicts"))

    async def _sweep_review_queue(self) -> None:
        """Close review items whose conflict is gone (settled on a device, superseded), now and then."""
        queue = self.review_queue()
        while True:
            closed = await queue.sweep_gone()
            if closed:
                log.info("review.swept", closed=len(closed))
            await asyncio.sleep(self.settings.review_sweep_interval_s)

    def workers_alive(self) -> dict[str, bool]:
        """Per role loop, whether it runs (see :meth:`ProcessView.workers_alive`)."""
        return self.process_view().workers_alive()


def distributed_config(settings: Settings) -> list[dict[str, Any]]:
    """The server-owned ``config:`` documents every user database carries (the distributor writes them, the
    dry run ``profiles plan`` counts them): the business rules and the device policy."""
    policy = device_policy_document(settings.device_lock_after_days, settings.device_wipe_after_days)
    return [*config_documents(), policy]


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests driving run())
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
