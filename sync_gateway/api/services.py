"""What the admin API and its pages need of a running process, handed to :func:`create_app` once.

The runtime builds one :class:`ApiServices` and passes it in; every route receives it through the
:data:`ServicesDep` dependency, which ``create_app`` binds to that object. No route reaches back up to the
runtime: the API depends only on the pieces named here, all from the layers below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from sync_gateway.accounts.people import People
from sync_gateway.config import Settings
from sync_gateway.contracts import ErpConnector
from sync_gateway.couch.checkpoints import Checkpoints
from sync_gateway.couch.client import CouchClient
from sync_gateway.edge.devices import DeviceRegistry
from sync_gateway.edge.events import DeviceEvents
from sync_gateway.edge.webhooks import Outbox
from sync_gateway.eventlog.store import EventLog
from sync_gateway.health import ProcessView
from sync_gateway.project.deadletters import DeadLetters
from sync_gateway.quarantine import Quarantine
from sync_gateway.review.facts import ReviewFacts
from sync_gateway.review.queue import ReviewQueue
from sync_gateway.users import UserRegistry


@dataclass(frozen=True)
class ApiServices:
    """The services of the admin API, all over the API's CouchDB client (few retries: a person waits)."""

    settings: Settings
    couch: CouchClient
    registry: UserRegistry
    people: People
    devices: DeviceRegistry
    device_events: DeviceEvents  # audit trail + webhook outbox of device changes
    outbox: Outbox
    events: EventLog
    dead_letters: DeadLetters
    checkpoints: Checkpoints
    quarantine: Quarantine
    review: ReviewQueue  # with the process's applier and decliner, when it has them
    facts: ReviewFacts  # the ERP facts of review items, from the mirror and the event log
    process: ProcessView  # loops alive, followers, metrics of this process
    connector: ErpConnector | None = None


def services() -> ApiServices:
    """The dependency every route declares; ``create_app`` binds it to the services it was given."""
    raise RuntimeError("ApiServices are not bound: build the app with create_app(services)")


ServicesDep = Annotated[ApiServices, Depends(services)]
