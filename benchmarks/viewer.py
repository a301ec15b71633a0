"""The web viewer under load: ``python -m benchmarks.viewer [--rate 20000] [--seconds 60]``.

A collector with ``--http`` receives *rate* records/s from two ZLogHandler apps
(``benchmarks.workers.latency_app``, half the rate each) for *seconds* (longer,
and slower, when the machine cannot keep up: the achieved rate is reported), while Debian's chromium
(driven by Playwright) shows the page with no filter: the worst case, every
record goes to the browser. Once a second the page is asked a question
(``page.evaluate``) and the answer's round trip is timed, first with no load
(what the machine gives anyway), then under the load: the page is responsive
when that stays short. Also read: the rows and all the elements in the DOM,
the records the page keeps, the JavaScript heap, the CPU the collector and
chromium used while the apps logged (and how long the collector waited for a
CPU), the collector's counters once it has caught up (received, lost,
dropped) and the apps' own count of what their handlers dropped at the
high-water mark: every record sent is received or dropped by an app.
``--linger S`` gives the apps' ``close()`` S seconds for what is still queued
(the handler's 2 s by default: the rest is discarded uncounted);
``--sender raw`` sends stock ``[topic, text]`` frames from a bare socket
instead (a fraction of a logging call's CPU: the collector gets the cores);
``--browser-nice 19`` runs chromium under ``nice`` (does the collector get
its records when the browser yields the CPU?). Prints one JSON object.

Needs /usr/bin/chromium and playwright (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import percentile, progress, scratch, tcp_endpoint, worker, zlogcollect

SENDERS = 2
"""App processes sharing the rate (one ZLogHandler each)."""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
KEEP_STREAMS_JS = """(() => {
  const Original = window.EventSource;
  window.__streams = [];
  window.EventSource = class extends Original {
    constructor(...args) { super(...args); window.__streams.push(this); }
  };
  window.__long = [];  // the page's tasks over 50 ms (what a click would wait behind), in ms
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__long.push(entry.duration);
  }).observe({ type: "longtask", buffered: true });
})()"""
PROBE_JS = """() => ({
  rows: document.querySelectorAll('#records > li').length,
  nodes: document.getElementsByTagName('*').length,
  kept: Number(document.getElementById('records').dataset.kept || 0),
  heap: (performance.memory && performance.memory.usedJSHeapSize) || 0,
  status: document.getElementById('status').textContent,
  note: document.getElementById('history').textContent,
})"""


def measure(
    rate: float,
    seconds: float,
    subscribe: bool = True,
    browser_nice: int = 0,
    linger: float = 2.0,
    sender: str = "handler",
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with scratch("zlview") as work:
        endpoint = tcp_endpoint()
        collector = zlogcollect(
            "collect", ["--bind", endpoint, "--dir", str(work / "logs"), "--http", "127.0.0.1:0"], work
        )
        try:
            ready = next(line for line in collector.stderr_lines if "ready:" in line)
            found = re.search(r"http://(\S+?)/", ready)
            assert found, ready
            url = f"http://{found.group(1)}/"
            executable = "/usr/bin/chromium"
            if browser_nice:
                wrapper = work / "chromium-nice"
                wrapper.write_text(f'#!/bin/sh\nexec nice -n {int(browser_nice)} {executable} "$@"\n')
                wrapper.chmod(0o755)
                executable = str(wrapper)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script(KEEP_STREAMS_JS)
                page.goto(url)
                page.wait_for_function("document.getElementById('status').textContent === 'live'")
                if not subscribe:  # the control: the same page, its stream closed, the same load
                    page.evaluate("() => window.__streams.forEach((es) => es.close())")
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                apps = [
                    worker(
                        "latency_app" if sender == "handler" else "raw_app",
                        stdin=True,
                        endpoint=endpoint,
                        root=f"load{i}",
                        rate=rate / SENDERS,
                        seconds=seconds,
                        max_seconds=seconds * 5 + 60 + linger,
                        linger=linger,
                    )
                    for i in range(SENDERS)
                ]
                for app in apps:
                    app.wait_stdout()
                idle: list[float] = []
                for _ in range(5):  # the same question with no load: what the machine gives anyway
                    started = time.perf_counter()
                    page.evaluate(PROBE_JS)
                    idle.append((time.perf_counter() - started) * 1000)
                    time.sleep(0.2)
                page.evaluate("() => { window.__long.length = 0; }")
                before = _metrics(cdp)
                cpu_before = (
                    _cpu([collector.pid]),
                    _cpu(_browser_pids()),
                    time.perf_counter(),
                    _waited(collector.pid),
                )
                for app in apps:
                    app.tell("go")
                progress(f"viewer: {rate:.0f} records/s for {seconds:.0f} s into the page")
                rtts: list[float] = []
                samples: list[dict[str, Any]] = []
                while any(app.alive() for app in apps):  # as long as the apps log (slower than asked if
                    started = time.perf_counter()  # the machine cannot keep up)
                    sample = page.evaluate(PROBE_JS)
                    rtts.append((time.perf_counter() - started) * 1000)
                    samples.append(sample)
                    time.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))
                after = _metrics(cdp)
                cpu_after = (
                    _cpu([collector.pid]),
                    _cpu(_browser_pids()),
                    time.perf_counter(),
                    _waited(collector.pid),
                )
                long_tasks: list[float] = page.evaluate("() => window.__long")
                sent = [app.wait_json(60) for app in apps]
                page.screenshot(path=str(work / "viewer-load.png"))
                browser.close()
            at_end = collector.ask_counters()
            counts = _caught_up(collector, sum(part["sent"] for part in sent))
        finally:
            collector.stop()
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sum(part["sent"] for part in sent),
        "sent_per_second": round(sum(part["sent"] / part["seconds"] for part in sent)),
        "sending_seconds": round(max(part["seconds"] for part in sent), 1),
        "apps_dropped": sum(part["dropped"] for part in sent),
        "apps_close_seconds": round(max(part["close_seconds"] for part in sent), 1),
        "collector_received_when_apps_finished": at_end.get("received"),
        "collector_received": counts.get("received"),
        "collector_lost": counts.get("lost"),
        "collector_dropped": counts.get("dropped"),
        "collector_errors": counts.get("errors"),
        "collector_cpu": round((cpu_after[0] - cpu_before[0]) / (cpu_after[2] - cpu_before[2]), 2),
        # share of wall time the collector's threads were ready to run but waited for a CPU
        "collector_runqueue_wait": round((cpu_after[3] - cpu_before[3]) / (cpu_after[2] - cpu_before[2]), 2),
        "browser_cpu": round((cpu_after[1] - cpu_before[1]) / (cpu_after[2] - cpu_before[2]), 2),
        "browser_nice": browser_nice,
        "sender": sender,
        "idle_evaluate_ms_p50": round(percentile(idle, 50), 1),
        "evaluate_ms_p50": round(percentile(rtts, 50), 1),
        "evaluate_ms_p99": round(percentile(rtts, 99), 1),
        "evaluate_ms_max": round(max(rtts), 1),
        "dom_rows_max": max(s["rows"] for s in samples),
        "dom_elements_max": max(s["nodes"] for s in samples),
        "kept_max": max(s["kept"] for s in samples),
        "js_heap_mb_max": round(max(s["heap"] for s in samples) / 1e6, 1),
        "js_heap_mb_last": round(samples[-1]["heap"] / 1e6, 1),
        "subscribed": subscribe,
        # main-thread busy share while the apps logged (1.0: the page's thread never idle)
        "main_thread_busy": round(_share(before, after, "TaskDuration"), 3),
        "script_busy": round(_share(before, after, "ScriptDuration"), 3),
        "layout_busy": round(
            _share(before, after, "LayoutDuration") + _share(before, after, "RecalcStyleDuration"), 3
        ),
        "long_tasks": len(long_tasks),
        "long_task_ms_p50": round(percentile(long_tasks, 50), 1) if long_tasks else 0.0,
        "long_task_ms_max": round(max(long_tasks, default=0.0), 1),
        "status_last": samples[-1]["status"],
        "note_last": samples[-1]["note"],
    }


def _caught_up(collector: Any, sent: int) -> dict[str, Any]:
    """The collector's counters once received + lost reach *sent* (the apps' probes are extra) or
    stop moving for 3 s: what was still queued in its socket when the apps finished is counted too."""
    counts: dict[str, Any] = collector.ask_counters()
    still = time.monotonic()
    while time.monotonic() - still < 3:
        time.sleep(0.5)
        now: dict[str, Any] = collector.ask_counters()
        if now["received"] + now["lost"] >= sent:
            return now
        if (now["received"], now["lost"]) != (counts["received"], counts["lost"]):
            still = time.monotonic()
        counts = now
    return counts


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _browser_pids() -> list[int]:
    """This process's descendants that are chromium (the browser, its renderers and helpers)."""
    tree, found, todo = _children(), [], [os.getpid()]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            try:
                if "chrom" in Path(f"/proc/{child}/comm").read_text():
                    found.append(child)
            except OSError:
                pass
    return found


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes *pids* used so far."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _waited(pid: int) -> float:
    """Seconds the threads of *pid* spent runnable, waiting for a CPU (``/proc/PID/task/*/schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def _metrics(cdp: Any) -> dict[str, float]:
    """Chrome's performance counters (CDP ``Performance.getMetrics``), and when they were read."""
    found = {m["name"]: float(m["value"]) for m in cdp.send("Performance.getMetrics")["metrics"]}
    found["_wall"] = time.perf_counter()
    return found


def _share(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """Seconds of *name* per second of wall time between two readings."""
    return (after.get(name, 0.0) - before.get(name, 0.0)) / max(1e-9, after["_wall"] - before["_wall"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.viewer", description=__doc__)
    parser.add_argument("--rate", type=float, default=20_000.0, help="records/s the app logs")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long")
    parser.add_argument(
        "--no-subscribe", action="store_true", help="control: close the page's stream before the load starts"
    )
    parser.add_argument("--browser-nice", type=int, default=0, help="run chromium under nice -n N")
    parser.add_argument(
        "--linger",
        type=float,
        default=2.0,
        help="the apps' handler linger: how long close() gives what is still queued for the collector",
    )
    parser.add_argument(
        "--sender",
        choices=("handler", "raw"),
        default="handler",
        help="handler: ZLogHandler apps (a logging call each); raw: pre-formatted stock frames from a bare "
        "socket, so that on a 2-core machine the collector, not the load generator, gets the CPU",
    )
    args = parser.parse_args(argv)
    json.dump(
        measure(args.rate, args.seconds, not args.no_subscribe, args.browser_nice, args.linger, args.sender),
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
