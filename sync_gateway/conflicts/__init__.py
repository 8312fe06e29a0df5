"""Conflict detection in user databases and applying resolutions (handlers live in ``conflict_handlers/``)."""
