"""``server_wins``: the ERP's or gateway's version wins.

Stale base: ``current`` (the ERP's version) wins; without it, defer. Revision conflict: the versions the
gateway wrote win, recognised by ``Version.user == ""`` (the gateway fills ``user`` with the author of every
device leaf). A body field is not used as the marker: CouchDB refuses unknown ``_``-prefixed fields and a
device could forge any other. Exactly one server version, or several with the same content → it wins
(a server deletion deletes); none, or several that differ → defer. Business conflicts defer: a failed
rule needs a person, not the older data.
"""

from __future__ import annotations

from sync_gateway.contracts import Conflict, ConflictHandler, Resolution

from ._common import business_defer, defer, is_deleted, latest, resolved, same_content, sort_versions


class ServerWins:
    name = "server_wins"

    def resolve(self, conflict: Conflict) -> Resolution:
        if conflict.kind == "business":
            return business_defer(conflict)
        if conflict.kind == "stale_base":
            if conflict.current is None:
                return defer("stale base without the ERP's current version")
            if conflict.current.get("_deleted") is True:
                return resolved(conflict.doc_id, None, "the ERP deleted the entity")
            return resolved(conflict.doc_id, conflict.current, "the ERP's current version wins")
        servers = [v for v in sort_versions(conflict.versions) if v.user == ""]
        if not servers:
            return defer("no version was written by the server")
        deletions = {is_deleted(v) for v in servers}
        if len(deletions) > 1 or not same_content(servers):
            return defer("several differing server versions: " + ", ".join(v.rev for v in servers))
        best = latest(servers, conflict.server_time)
        if is_deleted(best):
            return resolved(conflict.doc_id, None, f"the server deleted the document ({best.rev})")
        return resolved(conflict.doc_id, best.doc, f"the server's version {best.rev} wins")


def create_handler() -> ConflictHandler:
    return ServerWins()
