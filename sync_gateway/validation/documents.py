"""Validation of device documents against the versioned JSON Schemas in ``sync_gateway/schemas/``.

Returns machine-readable reasons instead of raising, because an invalid document is an ordinary outcome:
it gets a ``rejected`` receipt and stays untouched in the user database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from sync_gateway.contracts import TRANSACTION_TYPES
from sync_gateway.resources import SCHEMA_DIR
from sync_gateway.validation import attachments, boundary

DEFAULT_SCHEMA_DIR = SCHEMA_DIR

# every `format` the schemas may use is asserted; uri and uri-reference are jsonschema's own checkers (they need
# rfc3986-validator, a dependency), date, date-time, time and email are stricter ones of ours
_formats = FormatChecker(formats=("uri", "uri-reference"))
if set(_formats.checkers) != {"uri", "uri-reference"}:  # pragma: no cover - a missing optional package
    raise ImportError("jsonschema cannot check uri formats: install rfc3986-validator")

_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_EMAIL = re.compile(
    rf"^{_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}}$"
)


@_formats.checks("email", raises=ValueError)  # type: ignore[untyped-decorator]
def _is_email(value: object) -> bool:
    """A deliverable-looking address: dot-atom local part (at most 64), a domain with a dot and a letter TLD."""
    if not isinstance(value, str):
        return True
    local, _, _domain = value.rpartition("@")
    return len(value) <= 254 and len(local) <= 64 and _EMAIL.match(value) is not None


@_formats.checks("time", raises=ValueError)  # type: ignore[untyped-decorator]
def _is_time(value: object) -> bool:
    """RFC 3339 full-time: ``HH:MM:SS[.frac]`` with ``Z`` or an offset."""
    if not isinstance(value, str):
        return True
    parsed = time.fromisoformat(value.replace("z", "Z"))
    return parsed.tzinfo is not None and len(value) >= 9


@_formats.checks("date-time", raises=ValueError)  # type: ignore[untyped-decorator]
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value)
    return parsed.tzinfo is not None and "T" in value


@_formats.checks("date", raises=ValueError)  # type: ignore[untyped-decorator]
def _is_date(value: object) -> bool:
    if isinstance(value, str):
        date.fromisoformat(value)
        if len(value) != 10:
            raise ValueError("dates are YYYY-MM-DD")
    return True


@dataclass(frozen=True)
class Reason:
    """Why a document was refused: a stable ``code``, the JSON path of the ``field`` and a sentence."""

    code: str
    message: str
    field: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


class DocumentValidator:
    """Validates transactions by ``type`` and ``schema_version``; also enforces the size limit."""

    def __init__(
        self,
        schema_dir: Path = DEFAULT_SCHEMA_DIR,
        max_doc_bytes: int = 512 * 1024,
        limits: boundary.Limits | None = None,
    ) -> None:
        self.max_doc_bytes = max_doc_bytes
        self.limits = limits or boundary.Limits()
        resources: list[tuple[str, Resource[Any]]] = []
        self._validators: dict[tuple[str, int], Draft202012Validator] = {}
        self._known_fields: dict[tuple[str, int], frozenset[str]] = {}
        schemas: dict[tuple[str, int], dict[str, Any]] = {}
        for path in sorted(schema_dir.glob("*.v*.json")):
            schema = json.loads(path.read_text())
            resources.append((schema["$id"], Resource.from_contents(schema)))
            name, version = path.name.removesuffix(".json").rsplit(".v", 1)
            schemas[(name, int(version))] = schema
        registry: Registry[Any] = Registry().with_resources(resources)
        for key, schema in schemas.items():
            if key[0] in TRANSACTION_TYPES:
                Draft202012Validator.check_schema(schema)
                inlined = _inline_refs(schema, registry.resolver(schema["$id"]))
                self._validators[key] = Draft202012Validator(inlined, format_checker=_formats)
                envelope = schemas.get(("envelope", key[1]), {})
                self._known_fields[key] = frozenset(schema.get("properties", {})) | frozenset(
                    envelope.get("properties", {})
                )
        missing = set(TRANSACTION_TYPES) - {name for name, _ in self._validators}
        if missing:
            raise FileNotFoundError(f"no schema in {schema_dir} for: {', '.join(sorted(missing))}")

    @property
    def versions(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for name, version in sorted(self._validators):
            found.setdefault(name, []).append(version)
        return found

    def unsafe(self, doc: dict[str, Any]) -> bool:
        """True when ``doc`` fails the boundary check (text, depth, sizes, numbers, id): nothing but a rejection
        may handle it."""
        checked = {k: v for k, v in doc.items() if k not in _UNCHECKED}
        return boundary.check_id(doc.get("_id")) is not None or bool(boundary.check(checked, self.limits))

    def validate(
        self, doc: dict[str, Any], size_bytes: int | None = None, *, stored_attachments: bool = False
    ) -> list[Reason]:
        """Every reason ``doc`` is not an acceptable transaction; empty when it is.

        ``stored_attachments``: the attachments are stubs of ones already in the database, whose content was
        checked when they were written (a reviewer's winner); only their names and sizes are checked."""
        size = size_bytes if size_bytes is not None else document_size(doc)
        if size > self.max_doc_bytes:
            return [Reason("too_large", f"document is {size} bytes, the limit is {self.max_doc_bytes}")]
        # text and structure first: nothing below (schemas, rules, the ERP) sees what cannot be stored or shown
        bad_id = boundary.check_id(doc.get("_id"))
        violations = boundary.check({k: v for k, v in doc.items() if k not in _UNCHECKED}, self.limits)
        if bad_id is not None or violations:
            return [Reason(v.code, v.message, v.field) for v in ([bad_id] if bad_id else []) + violations]
        doc_id = str(doc.get("_id", ""))
        doc_type = doc.get("type")
        prefix = doc_id.split(":", 1)[0]
        if doc_type not in TRANSACTION_TYPES:
            return [Reason("unknown_type", f"type {doc_type!r} is not one of {', '.join(TRANSACTION_TYPES)}", "type")]
        if prefix != doc_type:
            return [Reason("id_type_mismatch", f"id prefix {prefix!r} does not match type {doc_type!r}", "_id")]
        version = doc.get("schema_version")
        key = (str(doc_type), version if isinstance(version, int) else -1)
        validator = self._validators.get(key)
        if validator is None:
            known = ", ".join(str(v) for v in self.versions[doc_type])
            return [
                Reason(
                    "unknown_schema_version",
                    f"schema_version {version!r} of {doc_type} is not supported (known: {known})",
                    "schema_version",
                )
            ]
        allowed = self._known_fields[key]
        reasons = [
            Reason("unknown_field", f"field {name!r} is not part of {doc_type} v{version}", name)
            for name in sorted(set(doc) - allowed)
        ]
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            if error.validator == "unevaluatedProperties":
                continue  # reported above as unknown_field, without the noise of a failed allOf
            field = ".".join(str(part) for part in error.absolute_path)
            reasons.append(Reason("schema_violation", _describe(error.message), field))
        if not reasons:
            for v in attachments.check_attachments(str(doc_type), doc.get("_attachments"), stored=stored_attachments):
                reasons.append(Reason(v.code, v.message, v.field))
        return reasons[:20]


def document_size(doc: dict[str, Any]) -> int:
    """Bytes of a document as JSON plus the declared lengths of its attachments."""
    size = len(json.dumps({k: v for k, v in doc.items() if k != "_attachments"}).encode())
    attachments = doc.get("_attachments")
    if not isinstance(attachments, dict):
        return size
    return size + sum(int(a.get("length") or 0) for a in attachments.values() if isinstance(a, dict))


# CouchDB's own fields: attachments are checked by content (``attachments``), the rest is server-made
_UNCHECKED = frozenset({"_attachments", "_revisions", "_conflicts", "_rev"})

# keywords whose values are data, not schemas: never searched for references
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def _inline_refs(schema: Any, resolver: Any) -> Any:  # resolver: a referencing Resolver
    """``schema`` with every ``$ref`` replaced by the schema it names (wrapped in ``allOf``, which evaluates the
    same way). Checked once at start-up with the registry; validating then skips the per-document reference
    lookups, which cost most of jsonschema's time. Schemas here have no recursive references."""
    if isinstance(schema, list):
        return [_inline_refs(item, resolver) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: v if k in _DATA_KEYWORDS else _inline_refs(v, resolver)
        for k, v in schema.items()
        if k not in ("$ref", "$defs")
    }
    if "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        target = _inline_refs(resolved.contents, resolved.resolver)
        if isinstance(target, dict):
            target = {k: v for k, v in target.items() if k not in ("$id", "$schema")}
        out["allOf"] = [*out.get("allOf", []), target]
    return out


def _describe(message: str) -> str:
    """jsonschema messages quote the offending value; keep them short so receipts stay small."""
    return message if len(message) <= 300 else message[:297] + "..."
