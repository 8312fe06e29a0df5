"""Which paths and methods the edge passes through, and which ids a device may write."""

from __future__ import annotations

import pytest

from sync_gateway.edge.errors import EdgeRefusal
from sync_gateway.edge.routes import classify, device_may_write, own_endpoint


@pytest.mark.parametrize(
    ("method", "path", "kind", "suffix"),
    [
        ("GET", "/sync/", "db", ""),
        ("GET", "/sync", "db", ""),
        ("GET", "/sync/_changes", "changes", "/_changes"),
        ("POST", "/sync/_revs_diff", "revs_diff", "/_revs_diff"),
        ("POST", "/sync/_bulk_docs", "bulk_docs", "/_bulk_docs"),
        ("POST", "/sync/_bulk_get", "bulk_get", "/_bulk_get"),
        ("GET", "/sync/_all_docs", "all_docs", "/_all_docs"),
        ("POST", "/sync/_ensure_full_commit", "full_commit", "/_ensure_full_commit"),
        ("PUT", "/sync/_local/abc123", "local", "/_local/abc123"),
        ("GET", "/sync/sales_order%3Aabc", "doc", "/sales_order%3Aabc"),
        ("PUT", "/sync/sales_order:abc/signature.png", "doc", "/sales_order%3Aabc/signature.png"),
        ("GET", "/sync/_design/sync", "doc", "/_design/sync"),
    ],
)
def test_replication_endpoints_pass(method: str, path: str, kind: str, suffix: str) -> None:
    route = classify(method, path)
    assert route.kind == kind
    assert route.couch_suffix == suffix


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/sync/_find", 403, "endpoint_not_allowed"),
        ("POST", "/sync/_index", 403, "endpoint_not_allowed"),
        ("GET", "/sync/_security", 403, "endpoint_not_allowed"),
        ("POST", "/sync/_purge", 403, "endpoint_not_allowed"),
        ("GET", "/sync/_design/sync/_view/x", 403, "endpoint_not_allowed"),
        ("PUT", "/sync/_design/sync", 403, "endpoint_not_allowed"),
        ("GET", "/sync/a/b/c", 403, "endpoint_not_allowed"),
        ("PUT", "/sync/", 405, "method_not_allowed"),
        ("DELETE", "/sync/", 405, "method_not_allowed"),
        ("GET", "/sync/_bulk_docs", 405, "method_not_allowed"),
        ("GET", "/sync/..%2Fuserdb-x", 400, "invalid_path"),
        ("GET", "/sync/%2e%2e", 400, "invalid_path"),
        ("GET", "/sync/../userdb-x", 400, "invalid_path"),
        ("GET", "/sync/a%5Cb", 400, "invalid_path"),
        ("GET", "/sync//x", 400, "invalid_path"),
        ("GET", "/sync/%ff", 400, "invalid_path"),
        ("GET", "/userdb-x/_all_docs", 404, "unknown_endpoint"),
        ("GET", "/syncx/", 404, "unknown_endpoint"),
    ],
)
def test_everything_else_is_refused_with_a_stable_code(method: str, path: str, status: int, code: str) -> None:
    with pytest.raises(EdgeRefusal) as refused:
        classify(method, path)
    assert (refused.value.status, refused.value.code) == (status, code)
    assert refused.value.body()["code"] == code and refused.value.body()["reason"]


def test_devices_write_only_their_transactions_and_checkpoints() -> None:
    assert device_may_write("sales_order:1b2c")
    assert device_may_write("work_order_update:x")
    assert device_may_write("_local/checkpoint")
    for doc_id in (
        "receipt:sales_order:1",
        "config:device_policy",
        "product:P",
        "customer:C",
        "_design/x",
        "sales_order",
    ):
        assert not device_may_write(doc_id)


def test_own_endpoints() -> None:
    assert own_endpoint("/sync/_enrol") == "enrol"
    assert own_endpoint("/sync/_token") == "token"
    assert own_endpoint("/sync/_wipe") == "wipe"
    assert own_endpoint("/sync/_changes") is None


def test_a_multipart_upload_becomes_json_with_inline_attachments() -> None:
    import base64
    import json

    from sync_gateway.edge.multipart import multipart_to_json

    meta = {"_id": "sales_order:1", "_attachments": {"a.png": {"follows": True, "content_type": "image/png"}}}
    body = (
        b"--b\r\nContent-Type: application/json\r\n\r\n"
        + json.dumps(meta).encode()
        + b"\r\n--b\r\n\r\n\x89PNG\r\n--b--"
    )
    doc = json.loads(multipart_to_json(body, "multipart/related; boundary=b"))
    assert doc["_attachments"]["a.png"] == {"content_type": "image/png", "data": base64.b64encode(b"\x89PNG").decode()}
    with pytest.raises(EdgeRefusal) as refused:
        multipart_to_json(b"--b\r\n\r\nnot json\r\n--b--", "multipart/related; boundary=b")
    assert refused.value.code == "invalid_multipart"
