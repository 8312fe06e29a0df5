"""The conflict review web UI: server-rendered pages (Jinja2), a signed session cookie, no JavaScript."""
