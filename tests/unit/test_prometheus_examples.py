"""examples/prometheus/: the YAML parses, and every alert names only metric families the collector exports.

promtool is not available here, so the check is what it can be without it: the
files are valid YAML of the right shape, and each expression's metric names (and
the label names it filters on) exist in a scrape of the collector's own registry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zlogcollect.config import HTTP_PORT
from zlogcollect.health import AmqpView, Health
from zlogcollect.metrics import registry
from zlogcollect.stats import Stats

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prometheus"
PROMETHEUS_OWN = {"up"}  # series Prometheus itself adds to every target
PROMQL_WORDS = {"sum", "by", "without", "rate", "increase", "time", "and", "or", "unless", "on", "ignoring"}
NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")


def exported() -> dict[str, set[str]]:
    """Every sample name a fully featured collector exports (files and AMQP), with its label names."""
    stats = Stats(received=1)
    stats.written["app.log"] += 1
    stats.malformed["frame_count"] += 1
    stats.dropped["disk_error"] += 1
    stats.errors["disk_error"] += 1
    health = Health(stats, amqp=AmqpView(lambda: True, lambda: 0, 10))
    health.tick()
    text = generate_latest(registry(stats, health, files=True)).decode()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


def rules() -> list[dict[str, Any]]:
    return [rule for group in load("zlogcollect-rules.yml")["groups"] for rule in group["rules"]]


def test_the_scrape_config_scrapes_the_conventional_port_and_loads_the_rules() -> None:
    config = load("prometheus.yml")
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "zlogcollect"]
    assert job["metrics_path"] == "/metrics"
    targets = [target for static in job["static_configs"] for target in static["targets"]]
    assert targets and all(target.endswith(f":{HTTP_PORT}") for target in targets)
    for name in config["rule_files"]:
        assert (EXAMPLES / name).is_file(), name


def test_every_rule_has_a_name_an_expression_a_severity_and_a_summary() -> None:
    for rule in rules():
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"]), rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]


def test_expressions_name_only_exported_families_and_labels() -> None:
    names = exported()
    for rule in rules():
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values are not names
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # nor are range durations
        expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
        for match in NAME.finditer(expr):
            name, selector = match.group(1), match.group(2) or ""
            if name in PROMQL_WORDS or name.isdigit():
                continue
            if name in PROMETHEUS_OWN:
                continue
            assert name in names, f"{rule['alert']}: {name} is not exported (have {sorted(names)})"
            labels = set(re.findall(r"(\w+)\s*=~?", selector))
            assert labels <= names[name], f"{rule['alert']}: {name} has no label {labels - names[name]}"


def test_the_issue_s_alerts_are_there() -> None:
    """Collector down, any loss, malformed rate, bridge buffer above 80 %."""
    expressions = {rule["alert"]: rule["expr"] for rule in rules()}
    joined = "\n".join(expressions.values())
    assert 'up{job="zlogcollect"} == 0' in joined
    assert "zlogcollect_records_lost_total" in joined
    assert "rate(zlogcollect_records_malformed_total" in joined
    assert "zlogcollect_amqp_buffered / zlogcollect_amqp_buffer_limit > 0.8" in joined
