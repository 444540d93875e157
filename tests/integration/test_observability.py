"""Metrics, Prometheus, the Grafana dashboard, the access log, and the deploy files."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import holding_backend  # noqa: E402
from harness import ROOT, Client, admin, free_port, get, respond, wait_until

DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "switchyard.json")
EXPR_METRIC = re.compile(r"\b((?:switchyard|process)_[a-z_]+)\b")


def busy_proxy(backends, proxies, extra_top=""):
    """A proxy after varied traffic: OK, 404, a failing instance (retries, connect failures,
    ejections), health checks, a registration."""
    good = backends(name="good")
    dead_port = free_port()  # nothing listens there: connection refused
    cfg = (extra_top + "services:\n  s:\n"
           "    health_check: { path: /, interval: 200ms, timeout: 150ms }\n"
           "    outlier_detection: { consecutive_failures: 2, base_ejection_time: 60s, max_ejection_percent: 100 }\n"
           "    retry: { attempts: 2, on: [connect-failure] }\n"
           f"    instances:\n      - {{ address: {good.address}, id: good }}\n"
           f"      - {{ address: 127.0.0.1:{dead_port}, id: dead }}\n")
    p = proxies(cfg)
    for _ in range(20):
        get(p.addr, host="s")
    get(p.addr, host="nosuch")
    admin(p.admin, "PUT", "/v1/services/reg/instances/r1", {"address": good.address})
    get(p.addr, host="reg")
    wait_until(lambda: "switchyard_health_checks_total" in admin(p.admin, "GET", "/metrics")[1], what="probes")
    return p, good


def dashboard_metrics():
    dash = json.load(open(DASHBOARD))
    names = set()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            names.update(EXPR_METRIC.findall(t["expr"]))
    return names


def test_promtool_accepts_real_output(backends, proxies):
    if not shutil.which("promtool"):
        pytest.skip("promtool not installed (deploy/install-deps.sh installs prometheus)")
    p, _ = busy_proxy(backends, proxies)
    text = admin(p.admin, "GET", "/metrics")[1]
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    for family in ("switchyard_requests_total", "switchyard_request_duration_seconds", "switchyard_upstream_requests_total",
                   "switchyard_upstream_connect_failures_total", "switchyard_upstream_healthy",
                   "switchyard_upstream_active_requests", "switchyard_retries_total", "switchyard_circuit_breaker_open",
                   "switchyard_outlier_ejections_total", "switchyard_health_checks_total", "switchyard_registry_instances",
                   "switchyard_downstream_connections", "switchyard_build_info", "process_cpu_seconds_total",
                   "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert f"# TYPE {family} " in text, family
    # process_* read from /proc at the scrape: plausible values, not placeholders.
    value = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(process_\w+) (\S+)$", text, re.M)}
    assert value["process_resident_memory_bytes"] > 1 << 20
    assert 3 < value["process_open_fds"] < value["process_max_fds"]
    assert value["process_cpu_seconds_total"] >= 0  # clock ticks: a quiet new process may show 0
    assert abs(value["process_start_time_seconds"] - time.time()) < 3600
    # Buckets from 100 µs to 10 s.
    assert 'le="0.0001"' in text and 'le="10"' in text


def test_every_dashboard_metric_is_exported(backends, proxies):
    p, _ = busy_proxy(backends, proxies)
    text = admin(p.admin, "GET", "/metrics")[1]
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    used = dashboard_metrics()
    assert used, "no metric found in the dashboard"
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in exported or base in exported, f"dashboard uses {name}, which /metrics does not export"


def gauge(p, name, labels=""):
    text = admin(p.admin, "GET", "/metrics")[1]
    m = re.search(r"^" + re.escape(name) + (r"\{" + labels + r"\}" if labels else "") + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_in_flight_and_connection_gauges_follow_live_traffic(backends, proxies):
    b, release = holding_backend(backends, name="slow")
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/s/instances/i1", {"address": b.address})
    clients = [Client(p.addr) for _ in range(3)]
    for c in clients:
        c.send(b"GET / HTTP/1.1\r\nHost: s\r\n\r\n")
    wait_until(lambda: len(b.requests) == 3, 5, what="three requests at the backend")
    active = 'instance="i1",service="s"'
    assert gauge(p, "switchyard_upstream_active_requests", active) == 3
    assert gauge(p, "switchyard_downstream_connections") >= 3
    release.set()
    for c in clients:
        assert c.reader.read_response().status == 200
        c.close()
    wait_until(lambda: gauge(p, "switchyard_upstream_active_requests", active) == 0, 5, what="in-flight gauge back to 0")
    wait_until(lambda: gauge(p, "switchyard_downstream_connections") <= 1, 5,  # (the scrape's own admin connection is not a proxy one)
               what="connection gauge back down")


def test_instance_back_under_its_old_id_while_the_old_one_is_still_busy(backends, proxies):
    """Same labels → the same series: the departing runtime (kept alive by its in-flight request)
    must not remove the series the returning instance now shares."""
    b, release = holding_backend(backends, name="slow", only="/hold")
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/s/instances/e0", {"address": b.address})
    held = Client(p.addr)
    held.send(b"GET /hold HTTP/1.1\r\nHost: s\r\n\r\n")
    wait_until(lambda: len(b.requests) == 1, 5, what="the held request at the backend")
    assert admin(p.admin, "DELETE", "/v1/services/s/instances/e0")[0] == 204
    assert admin(p.admin, "PUT", "/v1/services/s/instances/e0", {"address": b.address})[0] == 201
    release.set()
    assert held.reader.read_response().status == 200
    held.close()
    series = 'switchyard_upstream_active_requests{instance="e0",service="s"}'
    for _ in range(3):
        assert get(p.addr, host="s").status == 200
        assert series in admin(p.admin, "GET", "/metrics")[1]


def test_deregistered_instance_series_disappear(backends, proxies):
    b = backends(name="x")
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/s/instances/gone", {"address": b.address})
    get(p.addr, host="s")
    text = admin(p.admin, "GET", "/metrics")[1]
    assert 'instance="gone"' in text
    admin(p.admin, "DELETE", "/v1/services/s/instances/gone")
    # With worker threads the series go when every worker has switched to the new snapshot (at
    # once with workers: 1, a few milliseconds later with more).
    wait_until(lambda: 'instance="gone"' not in admin(p.admin, "GET", "/metrics")[1], 5,
               what="the departed instance's series to disappear")


def start_prometheus(tmp, targets, interval="1s"):
    port = free_port()
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(f"global: {{ scrape_interval: {interval}, evaluation_interval: {interval} }}\n"
                "scrape_configs:\n  - job_name: switchyard\n    honor_labels: true\n"
                f"    static_configs: [{{ targets: [{', '.join(repr(t) for t in targets)}] }}]\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/data",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return urllib.request.urlopen(f"{base}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    wait_until(ready, 30, 0.1, what="prometheus ready")
    return proc, base


def prom_query(base, q):
    with urllib.request.urlopen(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_real_prometheus_scrapes_switchyard_and_dashboard_renders(backends, proxies, tmp_path):
    if not shutil.which("prometheus"):
        pytest.skip("prometheus not installed (deploy/install-deps.sh installs it)")
    p, good = busy_proxy(backends, proxies)
    proc, base = start_prometheus(str(tmp_path), [f"127.0.0.1:{p.admin[1]}"])
    try:
        def scraped():
            res = prom_query(base, 'switchyard_requests_total{service="s",code="200"}')
            return res and float(res[0]["value"][1]) >= 20

        wait_until(scraped, 30, 0.2, what="switchyard_requests_total in Prometheus")
        # The backend instance id survives as `instance` (honor_labels), as the dashboard expects.
        assert prom_query(base, 'switchyard_upstream_requests_total{instance="good"}')
        # A few seconds of traffic so rates have two points, then render every panel.
        t_end = time.monotonic() + 4
        while time.monotonic() < t_end:
            get(p.addr, host="s")
            time.sleep(0.02)  # pacing the traffic (~50 req/s), not waiting for anything
        wait_until(lambda: prom_query(base, 'rate(switchyard_requests_total{service="s"}[1m]) > 0'), 15, 0.2,
                   what="a rate")
        sys.path.insert(0, os.path.join(ROOT, "deploy", "grafana"))
        import render_preview
        out = os.path.join(str(tmp_path), "dashboard.png")
        drawn = render_preview.render(base, DASHBOARD, out, 60)
        assert drawn >= 10 and os.path.getsize(out) > 20000
        if os.environ.get("SWITCHYARD_UPDATE_SCREENSHOT"):
            shutil.copy(out, os.path.join(ROOT, "docs", "dashboard.png"))
    finally:
        proc.terminate()
        proc.wait(10)


def test_access_log_json_lines_and_sigusr1_reopen(backends, proxies, tmp_path):
    b = backends(name="b")
    log = tmp_path / "access.log"
    p = proxies(f"access_log: {log}\nservices:\n  s:\n    instances:\n      - {{ address: {b.address} }}\n")
    get(p.addr, "/one?x=1", host="s", headers=[("X-Request-Id", "rid-1")])
    get(p.addr, "/two", host="nosuch")
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, what="two access-log lines")
    # (With worker threads each worker writes its own batches: lines are found by path, not order.)
    lines = sorted((json.loads(l) for l in log.read_text().splitlines()), key=lambda l: l["path"])
    first = lines[0]
    for field in ("time", "client", "method", "path", "host", "status", "bytes_in", "bytes_out", "duration", "service",
                  "instance", "attempts", "request_id"):
        assert field in first, field
    assert first["status"] == 200 and first["path"] == "/one?x=1" and first["request_id"] == "rid-1"
    assert first["service"] == "s" and first["attempts"] == 1 and first["client"] == "127.0.0.1"
    assert lines[1]["status"] == 404 and lines[1]["error"] == "no_route"
    # logrotate: move the file away, SIGUSR1, and new lines go to a new file.
    rotated = tmp_path / "access.log.1"
    os.rename(log, rotated)
    p.send_signal(signal.SIGUSR1)
    p.wait_log("access log reopened")
    get(p.addr, "/three", host="s")
    wait_until(lambda: log.exists() and "/three" in log.read_text(), what="line in the reopened log")
    assert "/three" not in rotated.read_text()


def test_access_log_lines_stay_valid_json_for_any_bytes(backends, proxies, tmp_path):
    """A client may send any bytes in a header or path: each line is still one valid JSON object
    (bytes that are not UTF-8 become U+FFFD; quotes and control characters are escaped)."""
    b = backends(name="b")
    log = tmp_path / "access.log"
    p = proxies(f"access_log: {log}\nservices:\n  s:\n    instances:\n      - {{ address: {b.address} }}\n")
    # (request_bytes encodes latin-1: "\xff" is the byte 0xff, "\xc3\xa9" is UTF-8 for e-acute;
    # header values may carry such bytes, a path may not: llhttp answers 400 to those)
    assert get(p.addr, "/caf", host="s", headers=[("X-Request-Id", 'r\xff\xfeid-\xc3\xa9-"q"-\tx')]).status == 200
    wait_until(lambda: log.exists() and log.read_bytes().endswith(b"\n"), what="an access-log line")
    raw = log.read_bytes()
    line = json.loads(raw.decode("utf-8"))  # strict: fails on invalid UTF-8 or bad escapes
    assert line["request_id"] == 'r\ufffd\ufffdid-\u00e9-"q"-\tx'
    assert line["path"] == "/caf" and line["status"] == 200


def test_access_log_write_failure_does_not_hurt_the_proxy(backends, proxies, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    b = backends(name="b")
    p = proxies(f"access_log: /dev/full\nservices:\n  s:\n    instances:\n      - {{ address: {b.address} }}\n")
    for _ in range(50):
        assert get(p.addr, host="s").status == 200
    p.wait_log("access log write failed")
    assert sum("access log write failed" in l for l in p.lines) == 1  # said once


def test_deploy_files_are_valid():
    compose = os.path.join(ROOT, "deploy", "docker-compose.yml")
    doc = yaml.safe_load(open(compose))
    assert {"switchyard", "prometheus", "grafana", "orders-aiohttp", "orders-tornado"} <= set(doc["services"])
    if shutil.which("docker-compose"):
        r = subprocess.run(["docker-compose", "-f", compose, "config", "-q"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    prom = yaml.safe_load(open(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")))
    assert prom["scrape_configs"][0]["metrics_path"] == "/metrics" and prom["scrape_configs"][0]["honor_labels"]
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "config", os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    # The compose config of switchyard itself passes --check.
    from harness import BIN
    r = subprocess.run([BIN, "--check", "-c", os.path.join(ROOT, "deploy", "compose", "switchyard.yaml")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout
    # The "ha" profile: three etcd members and two switchyards sharing the registry.
    assert {"etcd1", "etcd2", "etcd3", "switchyard-a", "switchyard-b"} <= set(doc["services"])
    assert all(doc["services"][s]["profiles"] == ["ha"] for s in ("etcd1", "etcd2", "etcd3", "switchyard-a", "switchyard-b"))
    r = subprocess.run([BIN, "--check", "-c", os.path.join(ROOT, "deploy", "compose", "switchyard-ha.yaml")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    unit = open(os.path.join(ROOT, "deploy", "systemd", "switchyard.service")).read()
    for directive in ("NoNewPrivileges=yes", "DynamicUser=yes", "StateDirectory=switchyard", "ExecReload=/bin/kill -HUP"):
        assert directive in unit
    dash = json.load(open(DASHBOARD))
    assert all(t["datasource"]["uid"] == "switchyard-prometheus" for pnl in dash["panels"] for t in pnl["targets"])
