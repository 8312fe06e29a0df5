"""The admin REST API: health, users, events, dead letters; OpenAPI at /docs."""
