"""Settings from the environment (prefix ``SYNC_``), validated once at start-up.

Secrets (CouchDB password, admin token, connector passwords) come only from the environment and are held
as ``SecretStr`` so they never show up in a repr or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sync_gateway.resources import DEFAULT_PROFILES_DIR

Role = Literal["ingest", "project", "distribute", "api", "edge"]
ALL_ROLES: tuple[Role, ...] = ("ingest", "project", "distribute", "api", "edge")
RuleSetName = Literal["pricing", "approval", "availability", "workflow"]
ALL_RULE_SETS: tuple[RuleSetName, ...] = ("pricing", "approval", "availability", "workflow")


class Settings(BaseSettings):
    """Everything a gateway process needs to know; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="SYNC_", extra="ignore")

    couch_url: str = "http://127.0.0.1:5984"
    couch_user: str = "admin"
    couch_password: SecretStr = SecretStr("")
    admin_token: SecretStr = SecretStr("")

    roles: Annotated[list[Role], NoDecode] = Field(default_factory=lambda: list(ALL_ROLES))
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    health_host: str = "127.0.0.1"
    health_port: int = 0  # liveness, readiness and /metrics for any role (sync_gateway.health); 0: off

    system_db_prefix: str = "sync_"
    connector: str = "staging"
    connector_options: dict[str, Any] = Field(default_factory=dict)
    handlers: dict[str, str] = Field(default_factory=lambda: {"default": "field_merge"})

    max_doc_bytes: int = 512 * 1024
    ingest_batch_size: int = 500
    project_batch_size: int = 200
    feed_read_timeout_s: float = 60.0
    retry_max_delay_s: float = 30.0
    pull_interval_s: float = 5.0
    linger_s: float = 0.02
    accepted_receipt_delay_s: float = 1.0
    enforced_rules: Annotated[list[RuleSetName], NoDecode] = Field(default_factory=lambda: list(ALL_RULE_SETS))
    profiles_dir: str = ""  # offline data profiles (YAML); empty: the defaults shipped in the package
    distribute_batch_size: int = 500
    # how ingest learns of changes: wake-ups (auto, the default, is the same): the edge, then CouchDB 3's
    # _db_updates, or on a server without it the edge's wake-up marks and a slow sweep; "feeds" (explicit
    # only) holds one longpoll feed per user database instead
    ingest_wakeups: Literal["auto", "feeds", "wakeups"] = "auto"
    # servers without _db_updates: how often every user database's update_seq is compared with what ingest
    # read, to find writes that bypassed the edge (0: never); the reads of a pass are spread over the interval
    # and never faster than ingest_sweep_rate per second (a pass over N databases: max(interval, N / rate))
    ingest_sweep_interval_s: float = Field(default=300.0, ge=0)
    ingest_sweep_rate: float = Field(default=10.0, gt=0)  # pouchdb-server: ~5 ms of its CPU per database read
    ingest_concurrency: int = Field(default=16, ge=1, le=512)  # user databases drained at once (wake-ups)
    review_sweep_interval_s: float = 300.0  # how often review items whose conflict is gone are closed
    shutdown_grace_s: float = 10.0  # SIGTERM: how long loops get to save their checkpoints before the exit

    # people: accounts, sessions, OIDC sign-in (see README "Accounts, roles and audit")
    keep_bootstrap_token: bool = False  # SYNC_ADMIN_TOKEN keeps working after the first admin account exists
    session_secret: SecretStr = SecretStr("")  # signs UI sessions; empty: a random key kept in sync_accounts
    session_lifetime_s: int = 12 * 3600
    login_max_failures: int = 5  # failed sign-ins in a row before the account is locked
    login_lockout_s: float = 300.0
    approval_limit: float = 0.0  # the largest order total an ``approver`` may accept
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_scopes: str = "openid profile email"
    oidc_name_claim: str = "preferred_username"  # the account name an OIDC sign-in maps to
    oidc_groups_claim: str = "groups"
    oidc_role_map: dict[str, list[str]] = Field(default_factory=dict)  # issuer group → gateway roles
    public_url: str = ""  # the gateway's external base URL for the OIDC redirect; empty: from the request
    # the device edge (role ``edge``): devices replicate through it, never with CouchDB directly
    edge_host: str = "127.0.0.1"
    edge_port: int = 8100
    edge_token_secret: SecretStr = SecretStr("")  # signs access tokens (HS256); required by the edge role
    edge_access_ttl_s: int = 900
    edge_max_body_bytes: int = 8 * 1024 * 1024
    edge_rate_per_s: float = 50.0  # per device: sustained requests per second
    edge_rate_burst: int = 200  # per device: requests allowed in a burst
    edge_cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)  # app origins allowed by CORS
    edge_enrol_code_ttl_s: int = 24 * 3600
    device_lock_after_days: int = 7  # written into config:device_policy for the device client
    device_wipe_after_days: int = 30
    # device enrolment with an OIDC ID token the app obtained from this issuer (empty: off)
    edge_oidc_issuer: str = ""
    edge_oidc_audiences: Annotated[list[str], NoDecode] = Field(default_factory=list)  # the app's client id(s)
    edge_oidc_user_claim: str = "preferred_username"  # the claim that names the (provisioned) user
    # device events as signed webhooks (MDM, SIEM): endpoints, the HMAC secret, delivery and retries
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: SecretStr = SecretStr("")
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=12, ge=1, le=100)  # then the delivery is dead (admin API)
    webhook_backoff_base_s: float = Field(default=2.0, gt=0)
    webhook_backoff_cap_s: float = Field(default=600.0, gt=0)
    webhook_poll_s: float = Field(default=5.0, gt=0)  # how soon events written by another process are seen
    device_offline_check_s: float = Field(default=3600.0, gt=0)  # how often devices offline past policy are found

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator(
        "roles", "enforced_rules", "edge_cors_origins", "edge_oidc_audiences", "webhook_urls", mode="before"
    )
    @classmethod
    def _split_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("couch_url")
    @classmethod
    def _check_couch_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"SYNC_COUCH_URL must start with http:// or https://, not {parts.scheme or 'nothing'}://")
        if not parts.hostname:
            raise ValueError("SYNC_COUCH_URL names no host")
        return value

    @model_validator(mode="after")
    def _credentials_from_url(self) -> Settings:
        """``http://user:password@host:5984`` works too: the credentials move out of the URL (and so out of
        every message that names the server); explicit SYNC_COUCH_USER / SYNC_COUCH_PASSWORD win."""
        parts = urlsplit(self.couch_url)
        if parts.username is None and parts.password is None:
            return self
        if parts.username and "couch_user" not in self.model_fields_set:
            self.couch_user = unquote(parts.username)
        if parts.password and not self.couch_password.get_secret_value():
            self.couch_password = SecretStr(unquote(parts.password))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else ""
        self.couch_url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        return self

    def profiles_path(self) -> Path:
        return Path(self.profiles_dir) if self.profiles_dir else DEFAULT_PROFILES_DIR

    def db(self, name: str) -> str:
        """Name of a system database: ``events`` → ``sync_events``."""
        return f"{self.system_db_prefix}{name}"
