"""The benchmark suite runs in its quick form and produces every figure (never a timed assertion)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.perf]


def test_quick_benchmarks_produce_every_figure(tmp_path: Path) -> None:
    """`python -m benchmarks --quick` exits 0 and every benchmark reports finite medians and its checks."""
    output = tmp_path / "quick.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(output.read_text())
    assert data["machine"]["cores"] >= 1
    assert data["machine"]["pyzmq"]
    benchmarks = data["benchmarks"]
    assert set(benchmarks) == {
        "capacity",
        "appside",
        "bridge",
        "memory",
        "latency",
        "loss",
        "rotation",
        "writer",
        "restarts",
    }
    for name, outcome in benchmarks.items():
        assert outcome.get("error") is None, (name, outcome.get("error"))
        if outcome.get("skipped"):
            assert name in ("bridge", "writer") and not os.environ.get("CI"), outcome["skipped"]
            continue
        assert outcome["figures"], name
        for figure in outcome["figures"]:
            assert figure["values"], (name, figure["name"])
            assert math.isfinite(figure["median"]), (name, figure["name"])
    assert "collector" in result.stdout.lower() or "capacity" in result.stdout.lower()
    # The CURVE variants (issue 13) ran side by side with the plain ones: same run, both ratios there.
    names = {b: {f["name"]: f for f in benchmarks[b]["figures"]} for b in ("capacity", "appside")}
    for name in (
        "drain: zlogcollect with CURVE",
        "drain: zlogcollect with CURVE, structured frames",
        "drain CPU: zlogcollect with CURVE",
    ):
        assert name in names["capacity"], name
    curve = "ZLogHandler (structured) with CURVE"
    for name in (curve, f"{curve}: process CPU", "ZLogHandler (structured, default): process CPU"):
        assert name in names["appside"], name
    assert names["appside"][f"{curve}: delivered/sent"]["median"] == 1.0  # every record got through CURVE
    for bench, ratio in (
        ("capacity", "CURVE / plain, drain (records/s)"),
        ("appside", "CURVE / plain ZLogHandler, per call (process CPU, I/O thread included)"),
    ):
        assert math.isfinite(benchmarks[bench]["derived"][ratio]), ratio


def test_every_instruction_probe_runs() -> None:
    """Each probe `python -m benchmarks.instructions` hands to valgrind runs to the end (valgrind itself is
    not needed here): the probes use the real classes, so a change of their API shows up in CI."""
    from benchmarks.instructions import PROBES, main

    for name in PROBES:
        assert main(["--probe", name, "-n", "50"]) == 0, name
