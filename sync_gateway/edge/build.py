"""Composition of the edge role from the settings (called once by the runtime)."""

from __future__ import annotations

from collections.abc import Callable

from sync_gateway.accounts.idtoken import IdTokenVerifier
from sync_gateway.config import Settings
from sync_gateway.couch.client import CouchClient
from sync_gateway.edge.devices import DeviceRegistry
from sync_gateway.edge.events import DeviceEvents
from sync_gateway.edge.feeds import OpenFeeds
from sync_gateway.edge.limits import RateLimiter
from sync_gateway.edge.proxy import CouchPassThrough
from sync_gateway.edge.service import Edge
from sync_gateway.edge.tokens import AccessTokens
from sync_gateway.errors import ConfigurationError


def build_edge(
    settings: Settings,
    *,
    couch: CouchClient,
    watch_couch: CouchClient,
    wake: Callable[[str], None] | None = None,
    events: DeviceEvents | None = None,
) -> Edge:
    """The edge's services; refuses to start without a token secret (tokens would not survive a restart) or
    with an OIDC issuer for enrolment but no accepted audience."""
    secret = settings.edge_token_secret.get_secret_value()
    if not secret:
        raise ConfigurationError(
            "the edge role needs SYNC_EDGE_TOKEN_SECRET (at least 32 characters, e.g. `openssl rand -hex 32`)"
        )
    try:
        tokens = AccessTokens(secret, settings.edge_access_ttl_s)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    id_tokens = None
    if settings.edge_oidc_issuer:
        if not settings.edge_oidc_audiences:
            raise ConfigurationError(
                "SYNC_EDGE_OIDC_ISSUER needs SYNC_EDGE_OIDC_AUDIENCES: the client id(s) of the device app at the issuer"
            )
        id_tokens = IdTokenVerifier(settings.edge_oidc_issuer, settings.edge_oidc_audiences)
    feeds = OpenFeeds()
    passthrough = CouchPassThrough(
        settings.couch_url,
        settings.couch_user,
        settings.couch_password.get_secret_value(),
        max_body_bytes=settings.edge_max_body_bytes,
        feeds=feeds,
    )
    return Edge(
        couch=couch,
        watch_couch=watch_couch,
        devices=DeviceRegistry(couch, settings.db("registry")),
        tokens=tokens,
        passthrough=passthrough,
        feeds=feeds,
        limiter=RateLimiter(settings.edge_rate_per_s, settings.edge_rate_burst),
        enrol_limiter=RateLimiter(0.5, 20),
        couch_url=settings.couch_url,
        cors_origins=list(settings.edge_cors_origins),
        read_timeout=settings.feed_read_timeout_s,
        wake=wake,
        events=events,
        id_tokens=id_tokens,
        user_claim=settings.edge_oidc_user_claim,
    )
