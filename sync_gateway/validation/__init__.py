"""Is this document an acceptable transaction? One definition, below every layer that asks: ingest judges
device documents with it, the review queue a reviewer's winner, the admin API its text fields.

``boundary`` checks text and structure first (what cannot be stored or shown), ``attachments`` the signature
PNGs, ``documents`` the JSON Schemas per type and version.
"""
