"""The web viewer's page (issue 14): ``index.html``, ``app.css`` and ``app.js``, shipped as package data.

Served by :mod:`zlogcollect.httpd` at ``/`` and ``/static/NAME``; nothing else
under ``/static/`` exists. No build step and nothing fetched from elsewhere
(collectors often run offline); the script is plain JavaScript that inserts
every piece of log text with ``textContent``, and the Content-Security-Policy
below forbids inline script, so a log line can never become markup or code.

Standard library only: no sockets, no gevent.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

__all__ = ["CONTENT_SECURITY_POLICY", "MAX_KEPT", "RENDER", "asset", "headers"]

MAX_KEPT: Final = 20000
"""Records the page keeps (in a JavaScript array; older ones leave the page, not the files); app.js
says the same."""
RENDER: Final = 200
"""Rows of them the page's document holds at most (a slice around what is on screen); app.js's too."""

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this origin's files; no inline script or style, no plugins, not framed elsewhere."""

_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
}
_STATIC: Final = frozenset({"/static/app.css", "/static/app.js"})


def headers(content_type: str) -> list[tuple[str, str]]:
    """The response headers of one of the page's files."""
    return [
        ("Content-Type", content_type),
        ("Cache-Control", "no-cache"),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]


def asset(path: str) -> tuple[bytes, str] | None:
    """The file a request *path* names (``/`` or ``/static/app.js``) and its content type; None if none."""
    if path == "/":
        name = "index.html"
    elif path in _STATIC:
        name = path[len("/static/") :]
    else:
        return None
    return _read(name), _TYPES[name]


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()
