"""Access tokens, refresh-token helpers, the per-device token bucket and feed tracking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import jwt
import pytest

from sync_gateway.edge.errors import EdgeRefusal
from sync_gateway.edge.feeds import OpenFeeds, until_closed
from sync_gateway.edge.limits import RateLimiter
from sync_gateway.edge.tokens import AccessTokens, device_of_refresh_token, new_refresh_token, secret_hash

SECRET = "s" * 40


def test_access_tokens_carry_device_user_and_expiry() -> None:
    tokens = AccessTokens(SECRET, ttl_s=60)
    token, expires = tokens.issue("dev-abc", "anna", now=1_000_000)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["device"], claims["user"], claims["exp"]) == ("dev-abc", "anna", expires)
    with pytest.raises(EdgeRefusal) as expired:
        tokens.verify(AccessTokens(SECRET, ttl_s=-10).issue("dev-abc", "anna")[0])
    assert expired.value.code == "token_expired"
    fresh, _ = tokens.issue("dev-abc", "anna")
    assert tokens.verify(fresh).device_id == "dev-abc"
    with pytest.raises(EdgeRefusal) as foreign:
        AccessTokens("t" * 40, ttl_s=60).verify(fresh)
    assert foreign.value.code == "token_invalid"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        AccessTokens("short", ttl_s=60)


def test_refresh_tokens_name_their_device_and_are_stored_hashed() -> None:
    token = new_refresh_token("dev-123")
    assert device_of_refresh_token(token) == "dev-123"
    assert device_of_refresh_token("garbage") is None
    assert device_of_refresh_token("user.x") is None
    assert secret_hash(token) != token and len(secret_hash(token)) == 64


def test_the_bucket_allows_a_burst_then_the_rate_per_key() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    for _ in range(3):
        limiter.take("dev-a", now=100.0)
    with pytest.raises(EdgeRefusal) as limited:
        limiter.take("dev-a", now=100.0)
    assert (limited.value.status, limited.value.code) == (429, "rate_limited")
    assert limited.value.headers()["Retry-After"] == "1"
    limiter.take("dev-b", now=100.0)  # another device is not affected
    limiter.take("dev-a", now=100.6)  # refilled at 2/s


async def test_closing_a_device_ends_its_feeds_only() -> None:
    feeds = OpenFeeds()
    stream_open = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            stream_open.set()
            yield b"\n"
            await asyncio.sleep(0.01)

    async def consume(device: str) -> int:
        seen = 0
        with feeds.track(device, "anna") as closed:
            async for _ in until_closed(endless(), closed):
                seen += 1
        return seen

    cut = asyncio.create_task(consume("dev-1"))
    kept = asyncio.create_task(consume("dev-2"))
    await stream_open.wait()
    assert feeds.count() == 2
    assert feeds.close_device("dev-1") == 1
    assert await asyncio.wait_for(cut, 2.0) >= 1
    assert feeds.count("dev-1") == 0 and feeds.count("dev-2") == 1
    assert feeds.close_user("anna") == 1
    await asyncio.wait_for(kept, 2.0)
    assert feeds.count() == 0


def test_a_remembered_token_is_still_refused_once_expired(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    import jwt.api_jwt

    from sync_gateway.edge import tokens as tokens_module

    tokens = AccessTokens(SECRET, ttl_s=60)
    token, expires = tokens.issue("dev-abc", "anna")
    assert tokens.verify(token).device_id == "dev-abc"
    assert tokens.verify(token).device_id == "dev-abc"  # remembered

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Later:  # type: ignore[override]
            return cls.fromtimestamp(expires + 1, UTC)

    monkeypatch.setattr(tokens_module, "time", SimpleNamespace(time=lambda: float(expires + 1)))
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(EdgeRefusal) as expired:
        tokens.verify(token)
    assert expired.value.code == "token_expired"


def test_a_tampered_copy_of_a_remembered_token_is_refused() -> None:
    tokens = AccessTokens(SECRET, ttl_s=60)
    token, _ = tokens.issue("dev-abc", "anna")
    tokens.verify(token)
    head, payload, signature = token.split(".")
    forged_claims = jwt.encode({"device": "dev-other", "user": "bob", "exp": 2**40}, "x" * 40, algorithm="HS256")
    other_signature = ("B" if signature[0] == "A" else "A") + signature[1:]
    for forged in (f"{head}.{payload}.{other_signature}", f"{head}.{forged_claims.split('.')[1]}.{signature}"):
        with pytest.raises(EdgeRefusal) as invalid:
            tokens.verify(forged)
        assert invalid.value.code == "token_invalid"
