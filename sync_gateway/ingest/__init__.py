"""Ingest: user database changes → validation → event log → receipts."""
