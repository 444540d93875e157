"""Consul and Eureka compatible endpoints, driven by the real, unchanged client libraries:
python3-consul (Debian), node's `consul` and `eureka-js-client` (npm, installed into build-npm/ by
the first test that needs them: harness.node_modules), and Prometheus's consul_sd_configs (Debian's prometheus)."""
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import consul
import pytest

from harness import admin, free_port, get, node_modules, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def consul_client(p, token=None):
    return consul.Consul(host=p.admin[0], port=p.admin[1], token=token)


def instances(p, service):
    st, body, _ = admin(p.admin, "GET", f"/v1/services/{service}")
    return {} if st == 404 else {i["id"]: i for i in body["instances"]}


# ---------------------------------------------------------------- Consul, python3-consul


def test_python_consul_ttl_check_registers_passes_routes_and_deregisters(backends, proxies):
    b = backends(name="orders-1")
    p = proxies("")
    c = consul_client(p)
    port = int(b.address.split(":")[1])
    assert c.agent.service.register("orders", service_id="orders-1", address="127.0.0.1", port=port,
                                    tags=["v1"], check=consul.Check.ttl("30s"))
    # A TTL check starts critical (as in Consul): listed, not passing, not routed.
    _, entries = c.health.service("orders")
    assert [e["Service"]["ID"] for e in entries] == ["orders-1"]
    assert c.health.service("orders", passing=True)[1] == []
    assert instances(p, "orders")["orders-1"]["state"] == "unhealthy"
    assert c.agent.check.ttl_pass("service:orders-1", notes="all good")
    index, entries = c.health.service("orders", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["orders-1"]
    e = entries[0]
    assert e["Service"]["Port"] == port and e["Service"]["Address"] == "127.0.0.1" and e["Service"]["Tags"] == ["v1"]
    assert {ch["CheckID"]: ch["Status"] for ch in e["Checks"]}["service:orders-1"] == "passing"
    assert int(index) >= 1
    # The same registry entry as a native one: routed by Host.
    r = get(p.addr, "/x", host="orders")
    assert r.status == 200 and r.body.startswith(b"orders-1")
    # catalog, agent views
    assert c.catalog.services()[1] == {"orders": ["v1"]}
    assert "orders-1" in c.agent.services()
    assert c.catalog.service("orders")[1][0]["ServicePort"] == port
    # warn keeps routing, fail takes it out (a second, passing instance takes the traffic; with
    # none left, panic routing would try the failing one rather than answer 503)
    b2 = backends(name="orders-2")
    assert c.agent.service.register("orders", service_id="orders-2", address="127.0.0.1",
                                    port=int(b2.address.split(":")[1]), check=consul.Check.ttl("30s"))
    assert c.agent.check.ttl_pass("service:orders-2")
    assert c.agent.check.ttl_warn("service:orders-1", notes="slow disk")
    assert {get(p.addr, "/x", host="orders").body[:8] for _ in range(20)} == {b"orders-1", b"orders-2"}
    assert [e["Service"]["ID"] for e in c.health.service("orders", passing=True)[1]] == ["orders-2"]
    assert c.agent.check.ttl_fail("service:orders-1", notes="db down")
    assert {get(p.addr, "/x", host="orders").body[:8] for _ in range(20)} == {b"orders-2"}
    checks = {ch["CheckID"]: ch for ch in c.health.service("orders")[1][0]["Checks"]}
    assert checks["service:orders-1"]["Status"] == "critical" and checks["service:orders-1"]["Output"] == "db down"
    assert c.agent.check.ttl_pass("service:orders-1")
    assert {get(p.addr, "/x", host="orders").body[:8] for _ in range(20)} == {b"orders-1", b"orders-2"}
    assert c.agent.service.deregister("orders-1") and c.agent.service.deregister("orders-2")
    assert instances(p, "orders") == {}
    assert c.health.service("orders")[1] == []


def test_python_consul_http_check_probes_the_instance(backends, proxies):
    healthy = threading.Event()
    healthy.set()

    def handler(conn, req, backend):
        from harness import respond
        if req.target == "/health":
            respond(conn, 200 if healthy.is_set() else 500, b"")
            return True
        respond(conn, 200, b"api")
        return True

    b = backends(handler)
    p = proxies("")
    c = consul_client(p)
    port = int(b.address.split(":")[1])
    assert c.agent.service.register("api", service_id="api-1", address="127.0.0.1", port=port,
                                    check=consul.Check.http(f"http://127.0.0.1:{port}/health", "1s", timeout="1s"))
    wait_until(lambda: len(c.health.service("api", passing=True)[1]) == 1, 120, what="HTTP check passing")
    assert get(p.addr, "/", host="api").body == b"api"
    healthy.clear()
    wait_until(lambda: c.health.service("api", passing=True)[1] == [], 120, what="HTTP check critical")
    checks = {ch["CheckID"]: ch for ch in c.health.service("api")[1][0]["Checks"]}
    assert checks["service:api-1"]["Status"] == "critical" and checks["service:api-1"]["Type"] == "http"
    assert instances(p, "api")["api-1"]["state"] == "unhealthy"


def test_blocking_health_query_wakes_only_for_its_service(backends, proxies):
    """A watcher of one service is woken by a change to it, not by a change to another service.
    If the registration of `other` woke it, its answer would lack a-2: the assertion tells."""
    b = backends()
    p = proxies("")
    c = consul_client(p)
    port = int(b.address.split(":")[1])
    c.agent.service.register("a", service_id="a-1", address="127.0.0.1", port=port)
    index, entries = c.health.service("a")
    assert len(entries) == 1
    result = {}

    def watch():
        result["index"], result["entries"] = c.health.service("a", index=index, wait="60s")

    t = threading.Thread(target=watch)
    t.start()
    # The watcher is parked once a request for index `index` is waiting; poll the answer it would get.
    for i in range(20):
        c.agent.service.register("other", service_id=f"other-{i}", address="127.0.0.1", port=port)
    assert t.is_alive()
    c.agent.service.register("a", service_id="a-2", address="127.0.0.1", port=port)
    t.join(120)
    assert not t.is_alive()
    assert sorted(e["Service"]["ID"] for e in result["entries"]) == ["a-1", "a-2"]
    assert int(result["index"]) > int(index)


def test_blocking_query_times_out_with_the_same_index(proxies, backends):
    b = backends()
    p = proxies("")
    c = consul_client(p)
    c.agent.service.register("a", service_id="a-1", address="127.0.0.1", port=int(b.address.split(":")[1]))
    index, _ = c.health.service("a")
    t0 = time.monotonic()
    index2, entries = c.health.service("a", index=index, wait="500ms")
    # It waited (a proxy that ignored index/wait would answer at once), then answered as it was.
    assert time.monotonic() - t0 >= 0.45
    assert index2 == index and len(entries) == 1
    # An index already passed answers at once, whatever the wait.
    t0 = time.monotonic()
    index3, _ = c.health.service("a", index=int(index) - 1, wait="60s")
    assert time.monotonic() - t0 < 30 and index3 == index


def test_consul_index_header_on_every_answer_and_token(backends, proxies):
    p = proxies("admin:\n  listen: 127.0.0.1:0\n  token: s3cret-token\n")
    for path in ("/v1/health/service/none", "/v1/kv/fabio/config", "/v1/agent/nosuch", "/v1/catalog/services"):
        st, _, r = admin(p.admin, "GET", path)
        assert int(r.header("X-Consul-Index")) >= 1, path
    assert admin(p.admin, "GET", "/v1/kv/fabio/config")[0] == 404
    b = backends()
    port = int(b.address.split(":")[1])
    with pytest.raises(consul.base.ACLPermissionDenied):
        consul_client(p).agent.service.register("s", service_id="s-1", address="127.0.0.1", port=port)
    # GET deregister is a mutation too
    assert admin(p.admin, "GET", "/v1/agent/service/deregister/s-1")[0] == 403
    assert consul_client(p, token="s3cret-token").agent.service.register("s", service_id="s-1", address="127.0.0.1", port=port)
    assert admin(p.admin, "PUT", "/v1/agent/service/deregister/s-1?token=s3cret-token")[0] == 200
    assert instances(p, "s") == {}


def test_consul_datacenter_is_registry_datacenter(backends, proxies):
    b = backends()
    p = proxies("registry:\n  datacenter: east-1\n")
    c = consul_client(p)
    assert c.agent.self()["Config"]["Datacenter"] == "east-1"
    assert c.catalog.datacenters() == ["east-1"]
    c.agent.service.register("s", service_id="s-1", address="127.0.0.1", port=int(b.address.split(":")[1]))
    assert c.health.service("s", dc="east-1")[1][0]["Node"]["Datacenter"] == "east-1"
    st, text, r = admin(p.admin, "GET", "/v1/health/service/s?dc=west")
    assert st == 500 and "No path to datacenter" in text and int(r.header("X-Consul-Index")) >= 1


def test_consul_registration_errors_are_clear(proxies):
    p = proxies("")
    for body, words in [({"Name": "x"}, "Port"), ({"Port": 80}, "Missing service name"),
                        ({"Name": "x", "Port": 80, "Check": {"Args": ["/bin/true"], "Interval": "5s"}}, "not supported"),
                        ({"Name": "x", "Port": 80, "Check": {"HTTP": "http://127.0.0.1:81/h", "Interval": "5s"}}, "own port"),
                        ({"Name": "x", "Port": 80, "Check": {"HTTP": "http://127.0.0.1:80/h"}}, "Interval"),
                        ({"Name": "x", "Port": 80, "Address": "db.example"}, "address")]:
        st, text, r = admin(p.admin, "PUT", "/v1/agent/service/register", body)
        assert st == 400 and words in text, (body, text)
        assert int(r.header("X-Consul-Index")) >= 1
    assert admin(p.admin, "PUT", "/v1/agent/service/register", b"{not json")[0] == 400
    # A service ID registered again under another name moves there (IDs are unique on an agent).
    assert admin(p.admin, "PUT", "/v1/agent/service/register", {"Name": "x", "ID": "m-1", "Port": 9})[0] == 200
    assert admin(p.admin, "PUT", "/v1/agent/service/register", {"Name": "y", "ID": "m-1", "Port": 9})[0] == 200
    assert [s["name"] for s in admin(p.admin, "GET", "/v1/services")[1]["services"]] == ["y"]
    assert admin(p.admin, "PUT", "/v1/agent/service/deregister/m-1")[0] == 200
    assert admin(p.admin, "GET", "/v1/services")[1]["services"] == []


def test_consul_keys_in_any_case_weights_meta_and_deregister_critical(backends, proxies):
    b = backends()
    p = proxies("")
    port = int(b.address.split(":")[1])
    body = {"name": "w", "iD": "w-1", "port": port, "meta": {"Team": "x"}, "weights": {"passing": 7},
            "check": {"ttl": "10s", "deregister_critical_service_after": "1s", "status": "passing"}}
    assert admin(p.admin, "PUT", "/v1/agent/service/register", body)[0] == 200
    inst = instances(p, "w")["w-1"]
    assert inst["weight"] == 7 and inst["meta"] == {"Team": "x"} and inst["ttl"] == "10s"
    assert inst["deregister_critical_after"] == "1s"
    assert inst["address"] == f"127.0.0.1:{port}"  # no Address: the address it registered from
    # critical for longer than DeregisterCriticalServiceAfter: removed
    assert admin(p.admin, "PUT", "/v1/agent/check/fail/service:w-1")[0] == 200
    wait_until(lambda: instances(p, "w") == {}, 120, what="deregistered after being critical")
    assert p.wait_log("deregistered after being unhealthy")


def test_consul_maintenance_check_update_and_state_views(backends, proxies):
    b = backends()
    p = proxies("")
    port = int(b.address.split(":")[1])
    body = {"Name": "m", "ID": "m-1", "Port": port, "Check": {"TTL": "30s", "Status": "passing"}}
    assert admin(p.admin, "PUT", "/v1/agent/service/register", body)[0] == 200
    # maintenance = drain, shown as Consul's maintenance check
    assert admin(p.admin, "PUT", "/v1/agent/service/maintenance/m-1?enable=true")[0] == 200
    assert instances(p, "m")["m-1"]["draining"] is True
    checks = {c["CheckID"]: c["Status"] for c in admin(p.admin, "GET", "/v1/health/checks/m")[1]}
    assert checks == {"service:m-1": "passing", "_service_maintenance:m-1": "critical"}
    assert admin(p.admin, "PUT", "/v1/agent/service/maintenance/m-1?enable=false")[0] == 200
    assert instances(p, "m")["m-1"]["draining"] is False
    assert admin(p.admin, "PUT", "/v1/agent/service/maintenance/m-1")[0] == 400  # enable is required
    # check/update with a body; health/state filters by status
    assert admin(p.admin, "PUT", "/v1/agent/check/update/service:m-1", {"Status": "critical", "Output": "disk full"})[0] == 200
    crit = admin(p.admin, "GET", "/v1/health/state/critical")[1]
    assert [(c["CheckID"], c["Output"]) for c in crit] == [("service:m-1", "disk full")]
    assert admin(p.admin, "GET", "/v1/health/state/passing")[1] == []
    assert admin(p.admin, "GET", "/v1/health/state/bogus")[0] == 400
    assert admin(p.admin, "PUT", "/v1/agent/check/update/service:m-1", {"Status": "sideways"})[0] == 400
    assert admin(p.admin, "PUT", "/v1/agent/check/pass/service:nobody")[0] == 404
    assert set(admin(p.admin, "GET", "/v1/agent/checks")[1]) == {"service:m-1"}
    assert admin(p.admin, "GET", "/v1/agent/service/m-1")[1]["Port"] == port
    assert admin(p.admin, "GET", "/v1/status/leader")[0] == 200


# ---------------------------------------------------------------- Consul, node's `consul`


def test_node_consul_client(backends, proxies):
    modules = node_modules()
    b = backends(name="nodesvc")
    p = proxies("")
    port = b.address.split(":")[1]
    r = subprocess.run(["node", os.path.join(HERE, "compat", "consul_node.js"), p.admin[0], str(p.admin[1]), "nodesvc",
                        "nodesvc-1", port], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, NODE_PATH=modules))
    steps = {}
    for line in r.stdout.splitlines():
        e = json.loads(line)
        steps[e["step"]] = e["data"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert steps["health"] == [{"id": "nodesvc-1", "port": int(port), "tags": ["node", "v1"]}]
    assert steps["catalog"]["nodesvc"] == ["node", "v1"]
    assert "nodesvc-1" in steps["agent"]
    assert "deregistered" in steps
    assert instances(p, "nodesvc") == {}


# ---------------------------------------------------------------- Eureka


class EurekaNode:
    def __init__(self, modules, p, app, iid, port):
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "compat", "eureka_node.js"), p.admin[0], str(p.admin[1]),
                                      app, iid, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=dict(os.environ, NODE_PATH=modules))
        self.events = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"step": "output", "data": line})

    def seen(self, step, pred=lambda d: True):
        return any(e["step"] == step and pred(e["data"]) for e in self.events)

    def stop(self):
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.proc.wait(120)


def test_eureka_js_client_registers_heartbeats_fetches_and_deregisters(backends, proxies):
    modules = node_modules()
    b = backends(name="inventory-1")
    p = proxies("")
    port = int(b.address.split(":")[1])
    client = EurekaNode(modules, p, "INVENTORY", "inventory-1", port)
    try:
        wait_until(lambda: client.seen("registered"), 120, what="eureka-js-client registered")
        inst = instances(p, "inventory")["inventory-1"]
        assert inst["address"] == f"127.0.0.1:{port}" and inst["ttl"] == "90s"
        assert inst["meta"] == {"client": "eureka-js-client"}
        wait_until(lambda: client.seen("heartbeat"), 120, what="a heartbeat accepted")
        wait_until(lambda: client.seen("fetched", lambda d: d == [{"id": "inventory-1", "status": "UP", "port": port}]), 120,
                   what="the client's registry fetch shows itself UP")
        assert get(p.addr, "/", host="inventory").body.startswith(b"inventory-1")
    finally:
        client.stop()
    assert client.seen("deregistered"), client.events
    assert instances(p, "inventory") == {}


def test_eureka_heartbeat_for_unknown_instance_is_404_and_xml_register(backends, proxies):
    b = backends(name="x1")
    p = proxies("")
    port = int(b.address.split(":")[1])
    assert admin(p.admin, "PUT", "/eureka/apps/BILLING/nope")[0] == 404
    xml = (f"<instance><instanceId>billing-1</instanceId><hostName>localhost</hostName><app>BILLING</app>"
           f"<ipAddr>127.0.0.1</ipAddr><status>UP</status><port enabled=\"true\">{port}</port>"
           f"<leaseInfo><durationInSecs>45</durationInSecs></leaseInfo>"
           f"<metadata><zone>z1</zone></metadata>"
           f"<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\"><name>MyOwn</name></dataCenterInfo>"
           f"</instance>").encode()
    st, _, _ = admin(p.admin, "POST", "/eureka/apps/BILLING", xml, headers=[("Content-Type", "application/xml")])
    assert st == 204
    inst = instances(p, "billing")["billing-1"]
    assert inst["ttl"] == "45s" and inst["meta"] == {"zone": "z1"}
    assert admin(p.admin, "PUT", "/eureka/apps/BILLING/billing-1")[0] == 200
    # XML read by Accept; JSON lists are always arrays
    st, text, r = admin(p.admin, "GET", "/eureka/apps", headers=[("Accept", "application/xml")])
    assert st == 200 and "<applications>" in text and "<instanceId>billing-1</instanceId>" in text
    assert f'<port enabled="true">{port}</port>' in text
    st, doc, _ = admin(p.admin, "GET", "/eureka/v2/apps/BILLING", headers=[("Accept", "application/json")])
    assert isinstance(doc["application"]["instance"], list) and doc["application"]["name"] == "BILLING"
    st, doc, _ = admin(p.admin, "GET", "/eureka/v2/apps", headers=[("Accept", "application/json")])
    assert doc["applications"]["apps__hashcode"] == "UP_1_"
    # OUT_OF_SERVICE drains; removing the override ends it
    assert admin(p.admin, "PUT", "/eureka/v2/apps/BILLING/billing-1/status?value=OUT_OF_SERVICE")[0] == 200
    assert instances(p, "billing")["billing-1"]["draining"] is True
    assert admin(p.admin, "GET", "/eureka/v2/apps/BILLING/billing-1", headers=[("Accept", "application/json")])[1]["instance"]["status"] == "OUT_OF_SERVICE"
    assert admin(p.admin, "DELETE", "/eureka/v2/apps/BILLING/billing-1/status")[0] == 200
    assert instances(p, "billing")["billing-1"]["draining"] is False
    # instances/{id}, vips/{vip}, and a delta that is empty but carries the registry's hashcode
    js = [("Accept", "application/json")]
    assert admin(p.admin, "GET", "/eureka/v2/instances/billing-1", headers=js)[1]["instance"]["app"] == "BILLING"
    vip = admin(p.admin, "GET", "/eureka/v2/vips/billing", headers=js)[1]["applications"]["application"]
    assert [a["name"] for a in vip] == ["BILLING"]
    delta = admin(p.admin, "GET", "/eureka/v2/apps/delta", headers=js)[1]["applications"]
    assert delta["application"] == [] and delta["apps__hashcode"] == "UP_1_"
    assert admin(p.admin, "DELETE", "/eureka/v2/apps/BILLING/billing-1")[0] == 200
    assert instances(p, "billing") == {}
    assert admin(p.admin, "POST", "/eureka/apps/BILLING", b"<instance><port>x", headers=[("Content-Type", "application/xml")])[0] == 400


def test_eureka_basic_auth_with_token(backends, proxies):
    import base64
    b = backends()
    p = proxies("admin:\n  listen: 127.0.0.1:0\n  token: tok-12345\n")
    body = {"instance": {"instanceId": "e1", "app": "E", "ipAddr": "127.0.0.1", "port": {"$": int(b.address.split(":")[1])}}}
    st, _, r = admin(p.admin, "POST", "/eureka/apps/E", body)
    assert st == 401 and "Basic" in r.header("WWW-Authenticate")
    auth = "Basic " + base64.b64encode(b"any:tok-12345").decode()
    assert admin(p.admin, "POST", "/eureka/apps/E", body, headers=[("Authorization", auth)])[0] == 204


# ---------------------------------------------------------------- Prometheus service discovery


def prometheus_supports(prom, sd, tmp_path):
    cfg = tmp_path / f"check-{sd}.yml"
    cfg.write_text(f"scrape_configs:\n  - job_name: t\n    {sd}_sd_configs:\n      - server: http://127.0.0.1:1\n")
    promtool = shutil.which("promtool") or os.path.join(os.path.dirname(prom), "promtool")
    r = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    return "not found in type" not in (r.stdout + r.stderr)


@pytest.mark.parametrize("sd", ["eureka", "consul"])
def test_prometheus_discovers_and_scrapes_through_switchyard(backends, proxies, tmp_path, sd):
    """Prometheus's own service discovery, pointed at switchyard, finds a registered exporter and
    scrapes it. Debian 12's prometheus 2.42 is built without Consul SD ("Disable Consul SD until its
    Debian package is back in shape", its changelog); the consul case runs where a Prometheus with
    consul_sd_configs is on PATH and says so otherwise."""
    prom = shutil.which("prometheus")
    if not prom:
        pytest.skip("prometheus not installed (deploy/install-deps.sh installs it)")
    if not prometheus_supports(prom, sd, tmp_path):
        pytest.skip(f"this prometheus ({prom}) is built without {sd}_sd_configs (Debian 12 disables Consul SD)")

    def exporter(conn, req, backend):
        from harness import respond
        respond(conn, 200, b"# TYPE demo_up gauge\ndemo_up 1\n", headers=[("Content-Type", "text/plain; version=0.0.4")])
        return True

    b = backends(exporter)
    p = proxies("")
    port = int(b.address.split(":")[1])
    if sd == "consul":
        consul_client(p).agent.service.register("exporter", service_id="exporter-1", address="127.0.0.1", port=port,
                                                tags=["metrics"])
        sd_config = f"consul_sd_configs:\n      - server: {p.admin[0]}:{p.admin[1]}\n        services: [exporter]"
    else:
        body = {"instance": {"instanceId": "exporter-1", "hostName": "127.0.0.1", "app": "EXPORTER", "ipAddr": "127.0.0.1",
                             "status": "UP", "port": {"$": port, "@enabled": "true"}, "vipAddress": "exporter"}}
        assert admin(p.admin, "POST", "/eureka/v2/apps/EXPORTER", body)[0] == 204
        sd_config = f"eureka_sd_configs:\n      - server: http://{p.admin[0]}:{p.admin[1]}/eureka/v2\n        refresh_interval: 1s"
    web = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: through-switchyard
    {sd_config}
""")
    proc = subprocess.Popen([prom, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{web}",
                             f"--storage.tsdb.path={tmp_path / 'data'}"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        def targets():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/targets", timeout=5) as r:
                    return json.loads(r.read())["data"]["activeTargets"]
            except OSError:
                return []

        def ours(t):
            return t["discoveredLabels"].get("__address__") == b.address

        try:
            wait_until(lambda: any(t["health"] == "up" and ours(t) for t in targets()), 180, interval=0.5,
                       what="Prometheus scraping the exporter it found through switchyard")
        except AssertionError:
            raise AssertionError(f"targets: {targets()}\nprometheus log:\n" + (tmp_path / "prometheus.log").read_text()[-3000:])
        t = [t for t in targets() if ours(t)][0]
        if sd == "consul":
            assert t["discoveredLabels"]["__meta_consul_service"] == "exporter"
        else:
            assert t["discoveredLabels"]["__meta_eureka_app_name"] == "EXPORTER"
            assert t["discoveredLabels"]["__meta_eureka_app_instance_id"] == "exporter-1"
    finally:
        proc.terminate()
        proc.wait(30)


def test_blocking_catalog_services_wakes_on_a_new_service(backends, proxies):
    """What Prometheus's and Traefik's Consul discovery do: watch the catalog with a blocking query."""
    b = backends()
    p = proxies("")
    c = consul_client(p)
    port = int(b.address.split(":")[1])
    c.agent.service.register("first", service_id="f-1", address="127.0.0.1", port=port)
    index, services = c.catalog.services()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=c.catalog.services(index=index, wait="60s")))
    t.start()
    c.agent.service.register("second", service_id="s-1", address="127.0.0.1", port=port, tags=["t"])
    t.join(120)
    assert not t.is_alive()
    assert result["r"][1] == {"first": [], "second": ["t"]}
    assert int(result["r"][0]) > int(index)
