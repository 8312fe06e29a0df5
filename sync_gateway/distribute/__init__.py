"""Download path: ERP master data → ``sync_mirror`` (and, with the offline data profiles, → user databases)."""
