"""The hybrid logical clock: format, ordering, monotonicity, and agreement with the JavaScript twin."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflict_handlers import hlc

MAX_WALL = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
stamps = st.builds(
    hlc.Timestamp,
    st.integers(0, MAX_WALL),
    st.integers(0, hlc.MAX_COUNTER),
    st.text(st.characters(min_codepoint=0x20, exclude_characters="\x7f"), min_size=1, max_size=12),
)


def test_format_is_iso_millis_counter_device() -> None:
    stamp = hlc.Timestamp(1_714_566_896_789, 10, "tablet-7")
    assert str(stamp) == "2024-05-01T12:34:56.789Z-000a-tablet-7"
    assert hlc.parse("2024-05-01T12:34:56.789Z-000a-tablet-7") == stamp


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        42,
        "2024-05-01T12:34:56Z-000a-dev",  # no millis
        "2024-05-01T12:34:56.789Z-00a-dev",  # counter too short
        "2024-05-01T12:34:56.789Z-000A-dev",  # upper-case hex
        "2024-05-01T12:34:56.789Z-000a-",  # no device
        "2024-02-30T12:34:56.789Z-000a-dev",  # no such day
        "2024-05-01T12:34:56.789+02:00-000a-dev",  # not UTC
        "2024-05-01T12:34:56.789Z-000a-dev\n",
    ],
)
def test_malformed_stamps_are_rejected(text: object) -> None:
    with pytest.raises(hlc.InvalidTimestamp):
        hlc.parse(text)
    assert hlc.try_parse(text) is None


@settings(max_examples=200, deadline=None)
@given(stamps, stamps)
def test_string_order_equals_timestamp_order(a: hlc.Timestamp, b: hlc.Timestamp) -> None:
    assert hlc.parse(str(a)) == a
    assert (str(a) < str(b)) == (a < b)
    assert (str(a) < str(b)) == (hlc.sort_key(str(a)) < hlc.sort_key(str(b)))


def test_clock_stays_monotonic_when_the_wall_clock_steps_back() -> None:
    walls = iter([5_000, 5_000, 4_000, 6_000])
    clock = hlc.HybridLogicalClock("dev-a", lambda: next(walls))
    issued = [clock.now() for _ in range(4)]
    assert issued == sorted(issued) and len(set(issued)) == 4
    assert [hlc.parse(s).counter for s in issued] == [0, 1, 2, 0]


def test_receive_moves_past_a_remote_stamp_from_the_future() -> None:
    clock = hlc.HybridLogicalClock("dev-a", lambda: 1_000)
    remote = str(hlc.Timestamp(9_000, 7, "dev-b"))
    merged = clock.receive(remote)
    assert merged > remote
    assert hlc.parse(merged) == hlc.Timestamp(9_000, 8, "dev-a")
    assert clock.now() > merged


def test_counter_overflow_borrows_a_millisecond() -> None:
    clock = hlc.HybridLogicalClock("dev-a", lambda: 1_000)
    clock.receive(str(hlc.Timestamp(1_000, hlc.MAX_COUNTER, "dev-b")))
    assert hlc.parse(clock.last.__str__()) == hlc.Timestamp(1_001, 0, "dev-a")


def test_device_id_must_be_printable_text() -> None:
    with pytest.raises(ValueError):
        hlc.HybridLogicalClock("")
    with pytest.raises(ValueError):
        hlc.HybridLogicalClock("dev\n1")


def test_server_time_accepts_iso_and_stamps() -> None:
    from conflict_handlers._common import server_wall_ms

    assert server_wall_ms("1970-01-01T00:00:01.500Z") == 1_500
    assert server_wall_ms("1970-01-01T00:00:01.500Z-0003-gw") == 1_500
    assert server_wall_ms("1970-01-01T01:00:00+01:00") == 0
    assert server_wall_ms("") is None
    assert server_wall_ms("yesterday") is None


_JS = r"""
const { HybridLogicalClock, parse } = require(process.argv[1]);
const walls = [1714566896789, 1714566896789, 1714566800000, 1714566900000];
const clock = new HybridLogicalClock("tablet-7", () => walls.shift() ?? 1714566900000);
const out = [clock.now(), clock.now(), clock.now(), clock.receive("2024-05-01T12:40:00.000Z-00ff-phone-2"),
             clock.now()];
out.push(parse(out[0]).counter);
console.log(JSON.stringify(out));
"""


def test_javascript_clock_prints_the_same_stamps_as_python() -> None:
    script = Path(hlc.__file__).with_suffix(".js")
    result = subprocess.run(["node", "-e", _JS, str(script)], capture_output=True, text=True, check=True, timeout=30)
    from_js = json.loads(result.stdout)
    walls = iter([1714566896789, 1714566896789, 1714566800000, 1714566900000])
    clock = hlc.HybridLogicalClock("tablet-7", lambda: next(walls, 1714566900000))
    from_py = [clock.now(), clock.now(), clock.now(), clock.receive("2024-05-01T12:40:00.000Z-00ff-phone-2")]
    from_py.append(clock.now())
    assert from_js[:5] == from_py
    assert from_js[5] == 0
    assert from_py == sorted(from_py)
