# -*- test-case-name: tests.test_webui_service -*-
"""
The web UI and the Mailpit-compatible HTTP API (C{SMTP_WEB_LISTEN}).

    listen      SMTP_WEB_LISTEN / SMTP_WEB_AUTH checks (loopback rule)
    password    scrypt hashes for SMTP_WEB_AUTH
    access      host check, cross-origin refusal, basic authentication
    http        responses as values, the router, the leaf resource
    api         Mailpit's API v1 (and GopherPost's additions)
    views       /view/{ID}.html and .txt (sanitized, sandboxed)
    sanitize    bleach configuration for HTML mail
    send        the send API and release (through the spool)
    events      Server-Sent Events for live updates
    service     the listener, and makeWebUIService (the wiring)
    static/     index.html, app.js, app.css (no build step)
"""
