"""Pushes a batch of events (a JSON file) through the Tryton connector: the process the crash test kills.

``python push_worker.py <options.json> <events.json>``; prints ``pushed`` when the push returns.
"""

from __future__ import annotations

import asyncio
import json
import sys

from erp_connectors.tryton import create_connector
from sync_gateway.contracts import Event


async def main(options_path: str, events_path: str) -> None:
    with open(options_path) as f:
        options = json.load(f)
    with open(events_path) as f:
        events = [Event(**raw) for raw in json.load(f)]
    connector = create_connector(options)
    await connector.start()
    try:
        await connector.push(events)
    finally:
        await connector.close()
    print("pushed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
