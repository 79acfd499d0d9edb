"""The Grafana dashboard and the Prometheus rules in deploy/: valid, and about real metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import httpx
import pytest

from tests.support import ROOT, prepare_engine_table, running_worker, wait_for, worker_settings

DASHBOARD = ROOT / "deploy" / "grafana" / "stats-worker.json"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
METRIC_NAME = re.compile(r"\bstats_worker_[a-z_]+\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_promtool_accepts_the_alert_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (apt-get install prometheus; ./dev test does it)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_rules_cover_what_an_operator_must_hear_about():
    text = RULES.read_text()
    for alert in (
        "StatsWorkerConsumerStalled",
        "StatsWorkerOldestMessageGrowing",
        "StatsWorkerDeadLetters",
        "StatsWorkerCallbacksFailing",
        "StatsWorkerDriftFound",
    ):
        assert f"alert: {alert}\n" in text


def test_the_dashboard_is_a_well_formed_grafana_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "stats-worker"
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0 and grid["y"] >= 0
    for panel in _panels(dashboard):
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert METRIC_NAME.search(target["expr"]), target
            assert target["expr"].count("(") == target["expr"].count(")"), target
    titles = " / ".join(p["title"] for p in _panels(dashboard)).lower()
    for topic in (
        "queue depth",
        "oldest message age",
        "messages by outcome",
        "job duration",
        "aggregation duration",
        "retries and dead letters",
        "callbacks",
        "listener",
        "pool",
    ):
        assert topic in titles


def _referenced() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in _panels(dashboard) for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return set(METRIC_NAME.findall("\n".join(exprs))) | set(METRIC_NAME.findall(RULES.read_text()))


def _exposed(text: str) -> set[str]:
    """Every series name /metrics can show: the families it declares, histograms' parts."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {name + suffix for suffix in HISTOGRAM_SERIES}
    return names


async def test_every_metric_the_dashboard_and_rules_name_is_in_metrics(database_url):
    await prepare_engine_table(database_url)
    async with running_worker(worker_settings(database_url, host="127.0.0.1")) as worker:

        async def listening() -> bool:
            return worker.http_port is not None

        await wait_for(listening)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{worker.http_port}/metrics")
    exposed = _exposed(response.text)
    referenced = _referenced()
    assert len(referenced) >= 15
    assert referenced - exposed == set()
