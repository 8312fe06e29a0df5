"""JSON text that hostile documents cannot break: parsing any nesting depth, and encoding any Python string.

Python's ``json`` recurses once per nesting level and raises ``RecursionError`` around depth 1,000, so one deep
document in a ``_changes`` page would make the whole page unreadable, again after every restart. ``loads``
parses such a page anyway: every subtree deeper than ``MAX_PARSE_DEPTH`` is replaced by ``TOO_DEEP_MARKER``,
which the ingest's boundary check turns into a ``too_deep`` rejection. Only pages that fail the fast path pay
for the scan.

JSON also allows lone UTF-16 surrogates (``"\\ud83d"``), which no UTF-8 encoder accepts. ``dumps`` writes them
as ``\\uXXXX`` escapes (``ensure_ascii``), so a response, a log line or a CouchDB write never fails on them.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_PARSE_DEPTH = 200
# stands for a subtree that was too deep to parse; contains NUL, so no valid transaction carries it
TOO_DEEP_MARKER = "\x00sync_gateway:too_deep\x00"
_MARKER_JSON = json.dumps(TOO_DEEP_MARKER)

_TOKEN = re.compile(r'["\[\]{}]')
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def loads(data: bytes | str) -> Any:
    """``json.loads``, except that nesting deeper than ``MAX_PARSE_DEPTH`` becomes ``TOO_DEEP_MARKER``."""
    try:
        return json.loads(data)
    except RecursionError:
        text = data.decode("utf-8", errors="surrogateescape") if isinstance(data, bytes) else data
        return json.loads(cap_depth(text, MAX_PARSE_DEPTH))


def canonical(value: Any) -> str:
    """One string per JSON value, for comparing and hashing: sorted keys, no whitespace, non-ASCII kept
    (``true`` and ``1`` stay different; anything that is no JSON value is written as its ``str``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def dumps(value: Any) -> str:
    """Compact JSON that is always encodable as UTF-8 (non-ASCII characters escaped)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def cap_depth(text: str, cap: int) -> str:
    """``text`` (JSON) with every array or object nested deeper than ``cap`` replaced by the marker string."""
    out: list[str] = []
    last = 0
    depth = 0
    pos = 0
    skip_from = -1
    while True:
        match = _TOKEN.search(text, pos)
        if match is None:
            break
        char, index = match.group(), match.start()
        if char == '"':
            rest = _STRING_REST.match(text, index + 1)
            if rest is None:
                break  # unterminated string: let json.loads report it
            pos = rest.end()
            continue
        if char in "[{":
            depth += 1
            if depth == cap + 1:
                skip_from = index
        else:
            if depth == cap + 1 and skip_from >= 0:
                out.append(text[last:skip_from])
                out.append(_MARKER_JSON)
                last = index + 1
                skip_from = -1
            depth -= 1
        pos = index + 1
    out.append(text[last:])
    return "".join(out)
