"""The web viewer in a real browser (chromium via Playwright) against a real collector subprocess.

Apps log with ZLogHandler in this process; the page gets the records from the
collector's /events and /search. Expectations wait (generously) for what must
show; nothing here asserts how fast (a time is printed where the issue names one).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import pytest

from tests.browser.conftest import Fleet, Watched
from tests.helpers import read_lines, wait_until
from zlogcollect import web
from zlogcollect.testing.process import free_port

try:
    from playwright.sync_api import Browser, Locator, Page, expect
except ImportError:  # the browser fixture skips (or fails, under CI=true) and says why
    pass

pytestmark = pytest.mark.browser


def rows(page: Page, text: str | re.Pattern[str] | None = None) -> Locator:
    records = page.locator("#records > li")
    return records if text is None else records.filter(has_text=text)


def open_viewer(page: Page, fleet: Fleet, query: str = "") -> None:
    """Open the page and wait until its stream is live."""
    response = page.goto(f"{fleet.url}/{query}")
    assert response is not None and response.status == 200
    expect(page.locator("#status")).to_have_text("live")


def messages(page: Page) -> list[str]:
    return [text.strip() for text in page.locator("#records > li .msg").all_inner_texts()]


def shows(page: Page, count: int) -> None:
    """Wait until the page shows *count* records; fail naming what it shows."""
    try:
        expect(rows(page)).to_have_count(count)
    except AssertionError:
        raise AssertionError(f"expected {count} records, the page shows {messages(page)}") from None


def test_a_record_logged_by_an_app_appears_at_once_with_its_fields(
    page: Page, fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start()
    response = page.goto(f"{fleet.url}/")
    assert response is not None
    headers = response.headers
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["cache-control"] == "no-cache"
    expect(page.locator("#status")).to_have_text("live")

    fleet.log("app1", logging.INFO, "warming up")  # the first record also waits for the handshake
    expect(rows(page, "warming up")).to_have_count(1)
    started = time.perf_counter()
    fleet.log("app1", logging.WARNING, "disk %d%% full", 91, subtopic="disk")
    expect(rows(page, "disk 91% full")).to_have_count(1)
    print(f"log call -> shown in the page: {(time.perf_counter() - started) * 1000:.0f} ms")

    row = rows(page, "disk 91% full")
    expect(row.locator(".lvl")).to_have_text("WARNING")
    expect(row).to_have_class(re.compile(r"\bl-warning\b"))
    expect(row.locator(".src")).to_have_text("app1")
    expect(row.locator(".sub")).to_have_text("disk")
    expect(row.locator(".who")).to_have_text(re.compile(rf":{os.getpid()}$"))
    expect(row.locator(".time")).not_to_be_empty()

    # A traceback stays one record: its first line, expandable to the rest.
    try:
        raise ValueError("card number rejected")
    except ValueError:
        fleet.logger("app2").exception("payment::charge failed")
    row = rows(page, "charge failed")
    expect(row).to_have_count(1)
    expect(row.locator(".lvl")).to_have_text("ERROR")
    details = row.locator("details")
    expect(details.locator("summary")).to_have_text("charge failed")
    expect(details.locator("pre")).not_to_be_visible()
    details.locator("summary").click()
    expect(details.locator("pre")).to_be_visible()
    expect(details.locator("pre")).to_contain_text("ValueError: card number rejected")

    for i in range(3):
        fleet.log("app2", logging.INFO, "GET /orders/%d 200 in %d ms", 4711 + i, 12 + i, subtopic="http")
    fleet.log("worker", logging.DEBUG, "queue depth 3", subtopic="queue")
    fleet.log("worker", logging.CRITICAL, "lost the database connection", subtopic="db")
    expect(rows(page, "lost the database")).to_have_count(1)
    shot = tmp_path / "viewer.png"
    page.set_viewport_size({"width": 1100, "height": 400})  # the size of the README's picture
    page.screenshot(path=str(shot))
    print(f"screenshot of the page: {shot}")


def test_level_source_and_filter_narrow_what_is_shown_and_the_url_says_so(page: Page, fleet: Fleet) -> None:
    fleet.start()
    fleet.log("app1", logging.INFO, "app1 started")
    fleet.log("app2", logging.ERROR, "app2 timeout talking to the db")
    fleet.log("app1", logging.WARNING, "app1 slow request")
    fleet.log("app2", logging.INFO, "app2 timeout retried, fine")
    wait_until(lambda: len(read_lines(fleet.logdir / "app2.log")) >= 2, 15, "app2's records in its file")
    wait_until(lambda: len(read_lines(fleet.logdir / "app1.log")) >= 2, 15, "app1's records in its file")
    open_viewer(page, fleet)
    shows(page, 4)

    page.get_by_label("Level").select_option("ERROR")
    shows(page, 1)
    expect(rows(page, "app2 timeout talking")).to_have_count(1)
    assert "level=ERROR" in page.url

    page.get_by_label("Level").select_option(value="")
    page.get_by_label("Source").select_option("app1")
    shows(page, 2)
    assert messages(page) == ["app1 started", "app1 slow request"]
    assert "source=app1" in page.url and "level=" not in page.url

    page.get_by_label("Source").select_option(value="")
    page.get_by_label("Filter").fill("TIMEOUT")
    shows(page, 2)
    expect(rows(page, "app1")).to_have_count(0)
    assert "q=TIMEOUT" in page.url
    page.get_by_label("Filter").fill("!timeout")
    expect(rows(page, "timeout")).to_have_count(0)
    shows(page, 2)
    page.get_by_label("Filter").fill("/talk.*db/")
    shows(page, 1)
    page.get_by_label("Filter").fill("/(unclosed/")  # the collector refuses it: one line, said on the page
    expect(page.locator("#status")).to_have_text(re.compile(r"^q: not a regular expression"))
    shows(page, 0)
    page.get_by_label("Filter").fill("/talk.*db/")
    expect(page.locator("#status")).to_have_text("live")
    shows(page, 1)

    # The link reproduces the view: the controls and the records follow the URL.
    open_viewer(page, fleet, "?level=ERROR&source=app2&q=timeout")
    expect(page.get_by_label("Level")).to_have_value("ERROR")
    expect(page.get_by_label("Source")).to_have_value("app2")
    expect(page.get_by_label("Filter")).to_have_value("timeout")
    shows(page, 1)
    expect(rows(page, "app2 timeout talking")).to_have_count(1)

    # Errors only is one click; records arriving afterwards are filtered by the server too.
    open_viewer(page, fleet)
    shows(page, 4)
    page.get_by_role("button", name="Errors only").click()
    shows(page, 1)
    assert "level=ERROR" in page.url
    expect(page.get_by_label("Level")).to_have_value("ERROR")
    fleet.log("app1", logging.INFO, "app1 chatter")
    fleet.log("app1", logging.ERROR, "app1 failed to write")
    expect(rows(page, "app1 failed to write")).to_have_count(1)
    assert messages(page) == ["app2 timeout talking to the db", "app1 failed to write"]

    # Download saves what is shown, as text.
    with page.expect_download() as event:
        page.get_by_role("button", name="Download").click()
    saved = Path(event.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(saved) == 2
    assert saved[0].endswith("| app2 timeout talking to the db") and " ERROR app2 " in saved[0]
    assert saved[1].endswith("| app1 failed to write")


def test_pause_and_scrolling_up_hold_the_view_and_count_and_resume_catches_up(
    page: Page, fleet: Fleet
) -> None:
    fleet.start()
    open_viewer(page, fleet)
    fleet.log("app1", logging.INFO, "before the pause")
    expect(rows(page, "before the pause")).to_have_count(1)

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    for i in range(3):
        fleet.log("app1", logging.INFO, "while paused %d", i)
    expect(page.locator("#arrived")).to_have_text("3 new (paused)")
    expect(rows(page, "while paused")).to_have_count(0)
    assert messages(page) == ["before the pause"]

    page.get_by_role("button", name="Resume").click()
    expect(rows(page, "while paused")).to_have_count(3)
    assert messages(page) == ["before the pause", "while paused 0", "while paused 1", "while paused 2"]
    expect(page.locator("#arrived")).to_be_hidden()
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    fleet.log("app1", logging.INFO, "after the pause")
    expect(rows(page, "after the pause")).to_have_count(1)

    # Scrolled up, the view stays where it is and counts what arrives below; back down, it follows.
    for i in range(80):
        fleet.log("app1", logging.INFO, "filler %d", i)
    expect(rows(page, "filler 79")).to_be_in_viewport()
    log_area = page.locator("#log")
    log_area.evaluate("element => { element.scrollTop = 0; }")
    fleet.log("app1", logging.INFO, "below the view")
    expect(page.locator("#arrived")).to_have_text("1 new below")
    expect(rows(page, "below the view")).not_to_be_in_viewport()
    assert log_area.evaluate("element => element.scrollTop") == 0
    log_area.evaluate("element => { element.scrollTop = element.scrollHeight; }")
    expect(page.locator("#arrived")).to_be_hidden()
    fleet.log("app1", logging.INFO, "followed again")
    expect(rows(page, "followed again")).to_be_in_viewport()


def test_the_page_resumes_after_the_collector_restarts(page: Page, fleet: Fleet) -> None:
    port = free_port()
    fleet.start(f"127.0.0.1:{port}")
    open_viewer(page, fleet)
    fleet.log("app1", logging.INFO, "first run")
    expect(rows(page, "first run")).to_have_count(1)

    fleet.stop()
    expect(page.locator("#status")).not_to_have_text("live")
    fleet.start(f"127.0.0.1:{port}")
    expect(page.locator("#status")).to_have_text("live")
    fleet.log("app1", logging.INFO, "second run")
    expect(rows(page, "second run")).to_have_count(1)
    assert messages(page) == ["first run", "second run"]


def test_hostile_log_text_shows_as_literal_text_and_runs_nothing(
    page: Page, watched: Watched, fleet: Fleet
) -> None:
    fleet.start()
    open_viewer(page, fleet)
    payloads = {
        "<script>alert(1)</script>": "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>": "<img src=x onerror=alert(1)>",
        "\x1b[31mred\x1b[0m text": "\\x1b[31mred\\x1b[0m text",  # the collector escapes control characters
        '"><svg onload=alert(1)>&amp;': '"><svg onload=alert(1)>&amp;',
    }
    for payload in payloads:
        fleet.log("evil", logging.ERROR, "%s", payload, subtopic="")
    fleet.log("evil", logging.ERROR, "multi\n<img src=y onerror=alert(2)>", subtopic="")
    shows(page, len(payloads) + 1)
    assert messages(page)[: len(payloads)] == list(payloads.values())
    last = rows(page).last
    last.locator("summary").click()
    expect(last.locator("pre")).to_have_text("<img src=y onerror=alert(2)>")
    assert page.locator("#records script, #records img, #records svg").count() == 0
    assert page.evaluate("typeof window.alert") == "function"
    assert watched.problems == []


def test_history_shows_records_written_before_the_page_opened(page: Page, fleet: Fleet) -> None:
    fleet.start()
    fleet.log("app1", logging.INFO, "app1 routine work")
    fleet.log("app2", logging.INFO, "app2 connecting to the quota server")
    fleet.log("app2", logging.ERROR, "app2 lost the quota server")
    fleet.log("app2", logging.INFO, "app2 carries on without quotas")
    for i in range(3):
        fleet.log("app1", logging.INFO, "app1 routine work %d", i)
    wait_until(lambda: len(read_lines(fleet.logdir / "app1.log")) >= 4, 15, "app1's records in its file")
    wait_until(lambda: len(read_lines(fleet.logdir / "app2.log")) >= 3, 15, "app2's records in its file")
    fleet.stop()
    fleet.start()  # a new run: its memory is empty, so what shows comes from the files

    open_viewer(page, fleet)
    shows(page, 7)
    expect(rows(page, "app2 lost the quota server")).to_have_count(1)

    page.get_by_label("Filter").fill("lost the quota")
    shows(page, 1)
    match = rows(page, "app2 lost the quota server")
    expect(match).to_have_count(1)

    # A match opens in context: the records around it in its file.
    match.get_by_role("button", name="context").click()
    dialog = page.locator("#context")
    expect(dialog).to_be_visible()
    expect(dialog.locator("li.here")).to_contain_text("app2 lost the quota server")
    expect(dialog.locator("li")).to_have_count(3)
    assert [text.strip() for text in dialog.locator("li .msg").all_inner_texts()] == [
        "app2 connecting to the quota server",
        "app2 lost the quota server",
        "app2 carries on without quotas",
    ]


def test_with_basic_auth_the_browser_logs_in_and_the_stream_follows(
    browser: Browser, fleet: Fleet, page: Page
) -> None:
    fleet.start(env={"ZLOGCOLLECT_HTTP_USER": "ops", "ZLOGCOLLECT_HTTP_PASSWORD": "s3cret pass"})
    refused = page.request.get(f"{fleet.url}/")
    assert refused.status == 401  # no credentials: nothing of the page
    assert "<script" not in refused.text()

    context = browser.new_context(http_credentials={"username": "ops", "password": "s3cret pass"})
    try:
        authed = Watched(context.new_page())
        open_viewer(authed.page, fleet)
        fleet.log("app1", logging.WARNING, "seen by the logged-in page")
        expect(rows(authed.page, "seen by the logged-in page")).to_have_count(1)
        assert authed.problems == []
    finally:
        context.close()


def _first_and_last(page: Page) -> tuple[int, int]:
    """The numbers (``n 123``) of the first and last rows in the document."""
    found: list[int] = page.evaluate(
        """() => [...document.querySelectorAll('#records > li .msg')]
                 .filter((_, i, all) => i === 0 || i === all.length - 1)
                 .map((el) => Number(el.textContent.split(' ')[1]))"""
    )
    return found[0], found[-1]


def test_the_document_holds_a_bounded_slice_of_the_records_kept_and_scrolling_reaches_older_ones(
    page: Page, fleet: Fleet
) -> None:
    total = web.MAX_KEPT + 1000
    fleet.start(extra=["--http-window", "100000"])  # the window holds the burst: the page misses nothing
    open_viewer(page, fleet)
    logger = fleet.logger("flood")
    for i in range(total):
        logger.info("n %d", i)
    records = page.locator("#records")
    expect(records).to_have_attribute("data-kept", str(web.MAX_KEPT))  # the page keeps its bound
    expect(rows(page, f"n {total - 1}")).to_be_in_viewport()  # following: the newest at the bottom
    shown = rows(page).count()
    assert 0 < shown <= web.RENDER, shown
    assert page.evaluate("document.getElementsByTagName('*').length") < 30 * web.RENDER
    first, last = _first_and_last(page)
    assert (first, last) == (total - shown, total - 1)

    # Scrolled up, older kept records come into the document (and newer ones leave it).
    log_area = page.locator("#log")
    for _ in range(3):
        log_area.evaluate("element => { element.scrollTop = 0; }")
        before = first
        wait_until(lambda: _first_and_last(page)[0] < before, 15, "older records after scrolling up")  # noqa: B023
        first, last = _first_and_last(page)
        assert rows(page).count() <= web.RENDER
    assert last < total - 1
    fleet.log("flood", logging.INFO, "below the view", subtopic="")
    expect(page.locator("#arrived")).to_have_text("1 new below")

    # Back at the bottom (in steps, as a wheel would go), it follows the newest again.
    def following_again() -> bool:
        log_area.evaluate("element => { element.scrollTop = element.scrollHeight; }")
        return page.locator("#arrived").is_hidden()

    wait_until(following_again, 15, "the page following again after scrolling down")
    expect(rows(page, "below the view")).to_have_count(1)
    fleet.log("flood", logging.INFO, "followed again", subtopic="")
    expect(rows(page, "followed again")).to_be_in_viewport()
    assert rows(page).count() <= web.RENDER

    # Download saves every record kept, not only the slice in the document.
    with page.expect_download() as event:
        page.get_by_role("button", name="Download").click()
    saved = Path(event.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(saved) == web.MAX_KEPT
    assert saved[-1].endswith("| followed again")


def test_a_live_record_opens_in_context_once_it_is_in_its_file(page: Page, fleet: Fleet) -> None:
    fleet.start()
    open_viewer(page, fleet)
    fleet.log("app2", logging.INFO, "app2 connecting to the quota server")
    fleet.log("app2", logging.ERROR, "app2 lost the quota server")
    fleet.log("app1", logging.ERROR, "app1 lost the quota server too")  # the same time, another file
    fleet.log("app2", logging.INFO, "app2 carries on without quotas")
    expect(rows(page, "carries on")).to_have_count(1)
    wait_until(lambda: len(read_lines(fleet.logdir / "app2.log")) >= 3, 15, "app2's records in its file")

    rows(page, "app2 lost the quota server").get_by_role("button", name="context").click()
    dialog = page.locator("#context")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#context-title")).to_have_text("Context: app2.log line 2")
    expect(dialog.locator("li.here")).to_contain_text("app2 lost the quota server")
    assert [text.strip() for text in dialog.locator("li .msg").all_inner_texts()] == [
        "app2 connecting to the quota server",
        "app2 lost the quota server",
        "app2 carries on without quotas",
    ]
