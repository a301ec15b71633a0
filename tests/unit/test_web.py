"""The web viewer's files: what is served, with which headers, and rules the page's code keeps."""

from __future__ import annotations

import re

import pytest

from zlogcollect import web


def test_the_page_and_its_two_files_are_served_with_their_types() -> None:
    page = web.asset("/")
    assert page is not None
    body, kind = page
    assert kind == "text/html; charset=utf-8"
    assert b'<script src="/static/app.js"' in body
    assert web.asset("/static/app.js") is not None
    assert web.asset("/static/app.js")[1] == "text/javascript; charset=utf-8"  # type: ignore[index]
    assert web.asset("/static/app.css")[1] == "text/css; charset=utf-8"  # type: ignore[index]


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/index.html",
        "/static/__init__.py",
        "/static/../__init__.py",
        "/static/app.js/",
        "/static//app.js",
        "/static/app.js%00",
        "/index.html",
        "/app.js",
        "",
    ],
)
def test_nothing_else_is_served(path: str) -> None:
    assert web.asset(path) is None


def test_the_headers_forbid_inline_script_and_caching_stale_copies() -> None:
    headers = dict(web.headers("text/html; charset=utf-8"))
    assert headers["Cache-Control"] == "no-cache"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"


def _text(name: str) -> str:
    found = web.asset("/" if name == "index.html" else f"/static/{name}")
    assert found is not None
    return found[0].decode("utf-8")


def test_the_page_has_no_inline_script_or_handlers_and_fetches_nothing_from_elsewhere() -> None:
    html = _text("index.html")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/app.js" defer>']
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handlers break the CSP"
    assert "style=" not in html
    for name in ("index.html", "app.js", "app.css"):
        assert not re.search(r"https?://", _text(name)), f"{name} names another origin"


def test_the_script_never_inserts_markup() -> None:
    script = _text("app.js")
    for forbidden in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert forbidden not in script, forbidden


def test_the_page_and_the_docs_agree_on_how_many_records_are_kept() -> None:
    assert f"const MAX_KEPT = {web.MAX_KEPT};" in _text("app.js")
    assert f"const RENDER = {web.RENDER};" in _text("app.js")
    assert f"{web.MAX_KEPT:,}" in _text("index.html")


def test_the_controls_have_the_names_the_tests_and_screen_readers_use() -> None:
    html = _text("index.html")
    for control_id, name in (("q", "Filter"), ("level", "Level"), ("source", "Source")):
        assert f'<label for="{control_id}">{name}</label>' in html
    for control_id, name in (("pause", "Pause"), ("download", "Download"), ("errors", "Errors only")):
        assert re.search(rf'<button id="{control_id}"[^>]*>{name}</button>', html), name
