"""Pushes a batch of events (a JSON file) through the Tryton connector: the process the crash test kills.

``python push_worker.py <options.json> <events.json>``; prints ``pushed`` when the push returns.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from erp_connectors.tryton import create_connector
from sync_gateway.contracts import Event


async def main(options: dict[str, Any], events: list[Event]) -> None:
    connector = create_connector(options)
    await connector.start()
    try:
        await connector.push(events)
    finally:
        await connector.close()
    print("pushed", flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        options = json.load(f)
    with open(sys.argv[2]) as f:
        events = [Event(**raw) for raw in json.load(f)]
    asyncio.run(main(options, events))
