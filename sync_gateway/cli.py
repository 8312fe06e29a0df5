"""The ``sync-gateway`` command.

sync-gateway run [--roles ingest,project,api]      run the gateway against SYNC_COUCH_URL
sync-gateway dev                                    embedded pouchdb-server + gateway + demo user
sync-gateway users add NAME --password … [--role R] [--attr key=value]
sync-gateway users import FILE                      provision many users without CouchDB logins (JSON lines)
sync-gateway users list
sync-gateway connectors check NAME
sync-gateway profiles check [FILES]                 validate offline data profiles
sync-gateway profiles plan [FILES] [--json]         dry run: what a profile change would add, change, evict
sync-gateway health [--role R]                      is the local process alive (and running role R)? exit 0/1
sync-gateway --version
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from sync_gateway import __version__
from sync_gateway.audit import Actor, AuditLog
from sync_gateway.config import Settings
from sync_gateway.couch.client import CouchClient
from sync_gateway.dbsecurity import ensure_security
from sync_gateway.errors import SyncGatewayError
from sync_gateway.logging import configure_logging
from sync_gateway.users import UserRegistry, UserSpec


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'SYNC_' + '.'.join(str(p) for p in err['loc']).upper() if err['loc'] else 'settings'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise SystemExit(f"error (invalid_settings): {problems}") from exc


async def _with_registry(settings: Settings) -> tuple[CouchClient, UserRegistry]:
    couch = CouchClient(settings.couch_url, settings.couch_user, settings.couch_password.get_secret_value())
    await couch.ensure_db("_users")
    await couch.ensure_db(settings.db("registry"))
    await ensure_security(couch, settings.db("registry"))
    return couch, UserRegistry(couch, settings.db("registry"))


async def _users_add(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password if args.password is not None else os.environ.get(args.password_env or "", None)
    attributes = dict(item.split("=", 1) for item in args.attr)
    couch, registry = await _with_registry(settings)
    try:
        before = await registry.get_or_none(args.name)
        record = await registry.provision(args.name, password, roles=args.role or None, attributes=attributes or None)
        await _audit_cli(couch, settings, "user.provisioned", f"user:{args.name}", before, record)
    finally:
        await couch.close()
    print(json.dumps(record, indent=2))
    return 0


async def _users_import(settings: Settings, path: str) -> int:
    """One user per line, ``{"name": …, "roles": […], "attributes": {…}}``, provisioned without CouchDB logins
    (their devices enrol with codes) through the bulk path, audited once per user."""
    text = sys.stdin.read() if path == "-" else await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    users: list[UserSpec] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            users.append(UserSpec(str(item["name"]), item.get("roles"), item.get("attributes")))
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"error (invalid_import): line {number}: expected a JSON object with a name") from exc
    couch, registry = await _with_registry(settings)
    try:
        records = await registry.provision_many(users)
        trail, actor = await _cli_trail(couch, settings)
        await trail.append_many(actor, "user.provisioned", [(f"user:{r['name']}", None, r) for r in records])
    finally:
        await couch.close()
    print(f"provisioned {len(records)} users")
    return 0


async def _audit_cli(couch: CouchClient, settings: Settings, action: str, target: str, before: Any, after: Any) -> None:
    """Changes made with this command are audited too: the actor is the operating-system user running it."""
    trail, actor = await _cli_trail(couch, settings)
    await trail.append(actor, action, target, before=before, after=after)


async def _cli_trail(couch: CouchClient, settings: Settings) -> tuple[AuditLog, Actor]:
    """The audit trail (created if missing) and the operating-system user running this command as its actor."""
    await couch.ensure_db(settings.db("audit"))
    await ensure_security(couch, settings.db("audit"))
    return AuditLog(couch, settings.db("audit")), Actor(getpass.getuser(), "cli", None)


async def _users_list(settings: Settings) -> int:
    couch, registry = await _with_registry(settings)
    try:
        for user in await registry.list():
            print(f"{user['name']:<24} {user['db']:<40} roles={','.join(user.get('roles', []))}")
    finally:
        await couch.close()
    return 0


async def _connectors_check(settings: Settings, name: str) -> int:
    from sync_gateway.plugins import load_connector

    connector = load_connector(name, settings.connector_options)
    problems: list[str] = []
    try:
        await connector.start()
        health = await connector.health()
        if not health.ok:
            problems.append(health.detail)
        problems.extend(await connector.check())
    except SyncGatewayError as exc:
        problems.append(str(exc))
    finally:
        await connector.close()
    for problem in problems:
        print(f"problem: {problem}")
    print(f"connector {name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1


async def _profiles(settings: Settings, args: argparse.Namespace) -> int:
    from sync_gateway.distribute.plan import format_report, plan
    from sync_gateway.profiles import load_profiles
    from sync_gateway.runtime import distributed_config

    profiles = load_profiles(args.files or [settings.profiles_path()])
    if args.profiles_command == "check":
        for profile in profiles.profiles:
            print(f"{profile.name:<22} roles={','.join(profile.roles):<24} entities={','.join(profile.entities)}")
        return 0
    couch = CouchClient(settings.couch_url, settings.couch_user, settings.couch_password.get_secret_value())
    try:
        report = await plan(
            couch,
            registry_db=settings.db("registry"),
            mirror_db=settings.db("mirror"),
            ledger_db=settings.db("distributed"),
            profiles=profiles,
            config_docs=distributed_config(settings),
        )
    finally:
        await couch.close()
    print(json.dumps(report.as_json(), indent=2) if args.json else format_report(report))
    return 0


async def _seed_masters(staging_url: str) -> None:
    """Load the demo master data into an empty staging database (``make run``), through the connector."""
    from sync_gateway.contracts import SeedsMasterData
    from sync_gateway.distribute.seed import demo_masters
    from sync_gateway.plugins import load_connector

    connector = load_connector("staging", {"url": staging_url})
    await connector.start()
    try:
        if isinstance(connector, SeedsMasterData):
            await connector.seed_master_data(demo_masters())
    finally:
        await connector.close()


async def _run(settings: Settings) -> int:
    from sync_gateway.runtime import Gateway

    gateway = Gateway(settings)
    await gateway.run()
    return 0


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets for the embedded stack: the environment wins, otherwise generated once and kept (0600)."""
    path = data_dir / "dev-secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    values = {
        "couch_password": os.environ.get("SYNC_COUCH_PASSWORD")
        or stored.get("couch_password")
        or secrets.token_urlsafe(18),
        "admin_token": os.environ.get("SYNC_ADMIN_TOKEN") or stored.get("admin_token") or secrets.token_urlsafe(24),
        "demo_password": os.environ.get("SYNC_DEMO_PASSWORD")
        or stored.get("demo_password")
        or secrets.token_urlsafe(12),
        "admin_password": stored.get("admin_password") or secrets.token_urlsafe(12),
        "edge_token_secret": os.environ.get("SYNC_EDGE_TOKEN_SECRET")
        or stored.get("edge_token_secret")
        or secrets.token_hex(32),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


DEV_ADMIN = "dev.admin"


async def _dev_admin_account(couch: CouchClient, settings: Settings, password: str) -> None:
    """The dev stack's admin account, so the web pages can be signed in to at once."""
    from sync_gateway.accounts.store import AccountStore

    await couch.ensure_db(settings.db("accounts"))
    await ensure_security(couch, settings.db("accounts"))
    store = AccountStore(couch, settings.db("accounts"))
    if await store.get_doc(DEV_ADMIN) is None:
        await store.create(DEV_ADMIN, roles=["admin"], password=password, created_by="sync-gateway dev")


async def _dev(args: argparse.Namespace) -> int:
    from sync_gateway.devserver import PROJECT_ROOT, PouchServer
    from sync_gateway.runtime import Gateway

    data_dir = PROJECT_ROOT / ".data"
    secret = _dev_secrets(data_dir)
    server = PouchServer(data_dir / "couch", "admin", secret["couch_password"], port=args.couch_port)
    server.start()
    try:
        settings = _settings(
            couch_url=server.url,
            couch_user="admin",
            couch_password=SecretStr(secret["couch_password"]),
            admin_token=SecretStr(secret["admin_token"]),
            keep_bootstrap_token=True,  # the dev stack's curl examples use it; production retires it
            api_port=args.api_port,
            edge_port=args.edge_port,
            edge_token_secret=SecretStr(secret["edge_token_secret"]),
            connector_options={"url": f"sqlite:///{data_dir / 'staging.db'}"},
            # the demo's approver may accept orders up to this total (production sets its own; default 0)
            approval_limit=os.environ.get("SYNC_APPROVAL_LIMIT", "5000"),
        )
        await _seed_masters(f"sqlite:///{data_dir / 'staging.db'}")
        couch, registry = await _with_registry(settings)
        try:
            await registry.provision(
                "demo",
                secret["demo_password"],
                roles=["field_technician"],
                attributes={"territory": "north", "van": "VAN-01"},
            )
            await _dev_admin_account(couch, settings, secret["admin_password"])
        finally:
            await couch.close()
        api = f"http://{settings.api_host}:{settings.api_port}"
        print(
            "\nSync gateway running (Ctrl-C stops everything).\n"
            f"  device edge (point PouchDB here): http://{settings.edge_host}:{settings.edge_port}/sync/"
            "  (enrol: POST /sync/_enrol, clients/js)\n"
            f"  CouchDB (gateway only):           {server.url}/userdb-{b'demo'.hex()}\n"
            f"  demo device login:               demo / {secret['demo_password']}\n"
            f"  admin API:                       {api}/api  (Authorization: Bearer {secret['admin_token']})\n"
            f"  review and admin pages:          {api}/review  (sign in as {DEV_ADMIN} / {secret['admin_password']})\n"
            f"  API docs:                        {api}/docs\n"
            f"  staging tables (SQLite):         {data_dir / 'staging.db'}\n"
            f"  secrets kept in {data_dir / 'dev-secrets.json'} (override with SYNC_* environment variables)\n",
            flush=True,
        )
        await Gateway(settings).run()
    finally:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-gateway", description="Offline-first ERP sync gateway")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway (settings from SYNC_* environment variables)")
    run.add_argument("--roles", help="comma-separated subset of ingest,project,distribute,api,edge (default: all)")
    dev = sub.add_parser("dev", help="embedded pouchdb-server, the gateway with all roles, and a demo user")
    dev.add_argument("--couch-port", type=int, default=5984)
    dev.add_argument("--api-port", type=int, default=8000)
    dev.add_argument("--edge-port", type=int, default=8100)
    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="provision a user (idempotent: also repairs and updates)")
    add.add_argument("name")
    add.add_argument("--password", help="the user's password (or use --password-env)")
    add.add_argument("--password-env", help="name of an environment variable holding the password")
    add.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    add.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE", help="an attribute (repeatable)")
    imports = users.add_parser("import", help="provision many users without CouchDB logins (JSON lines, - = stdin)")
    imports.add_argument("file")
    users.add_parser("list", help="list users")
    connectors = sub.add_parser("connectors", help="ERP connectors").add_subparsers(
        dest="connectors_command", required=True
    )
    check = connectors.add_parser("check", help="verify connectivity, modules and mapping of a connector")
    check.add_argument("name")
    profiles = sub.add_parser("profiles", help="offline data profiles").add_subparsers(
        dest="profiles_command", required=True
    )
    for command, text in (
        ("check", "load and validate profile files"),
        ("plan", "dry run: per user and entity, documents and bytes added, changed, evicted (writes nothing)"),
    ):
        parser_ = profiles.add_parser(command, help=text)
        parser_.add_argument("files", nargs="*", help="profile files or folders (default: SYNC_PROFILES_DIR)")
        if command == "plan":
            parser_.add_argument("--json", action="store_true", help="machine-readable output")
    health = sub.add_parser("health", help="probe the local process's health port (for container health checks)")
    health.add_argument("--role", choices=["ingest", "project", "distribute", "api"], help="also check its loops")
    return parser


def _health(settings: Settings, role: str | None) -> int:
    from sync_gateway.health import probe

    ok, detail = probe(settings, role)
    print(detail, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _serve(main: Coroutine[Any, Any, int]) -> int:
    """Run a serving process on uvloop when it is installed (the edge's and the API's per-request overhead is
    mostly the event loop's and the HTTP parser's), on asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM shuts down as cleanly as Ctrl-C
    for item in getattr(args, "attr", []) or []:
        if "=" not in item:
            raise SystemExit(f"--attr expects KEY=VALUE, got {item!r}")
    try:
        if args.command == "dev":
            configure_logging("INFO", "console")
            return _serve(_dev(args))
        overrides: dict[str, Any] = {}
        if getattr(args, "roles", None):
            overrides["roles"] = args.roles
        settings = _settings(**overrides)
        configure_logging(settings.log_level, settings.log_format)
        if args.command == "health":
            return _health(settings, args.role)
        if args.command == "run":
            return _serve(_run(settings))
        if args.command == "users":
            if args.users_command == "add":
                return asyncio.run(_users_add(settings, args))
            if args.users_command == "import":
                return asyncio.run(_users_import(settings, args.file))
            return asyncio.run(_users_list(settings))
        if args.command == "profiles":
            return asyncio.run(_profiles(settings, args))
        return asyncio.run(_connectors_check(settings, args.name))
    except KeyboardInterrupt:
        return 130
    except SyncGatewayError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
