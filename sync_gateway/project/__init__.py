"""Projection: event log → ERP connectors, with retries and dead letters."""
