"""CouchDB access: the HTTP client, the changes follower, checkpoints and server capabilities."""

from sync_gateway.couch.client import CouchClient, Seq
from sync_gateway.couch.naming import user_db_name, username_from_db

__all__ = ["CouchClient", "Seq", "user_db_name", "username_from_db"]
