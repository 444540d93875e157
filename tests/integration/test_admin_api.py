"""The admin API: every call, every error path, auth, long poll, catalog, metrics."""
import threading
import time

import pytest

from conftest import service_config
from harness import Client, admin, get, wait_until


def test_register_routes_traffic_on_the_next_request(backends, proxies):
    b = backends(name="dyn")
    p = proxies("")
    assert get(p.addr, host="orders").status == 404
    status, body, r = admin(p.admin, "PUT", "/v1/services/orders/instances/o1",
                            {"address": b.address, "weight": 2, "tags": ["v1"], "meta": {"team": "x"}, "zone": "z1", "ttl": "30s"})
    assert status == 201, body
    assert body["id"] == "o1" and body["state"] == "healthy" and body["source"] == "dynamic"
    assert int(r.header("x-switchyard-index")) >= 1
    # No waiting: the very next request after the answer goes to it.
    assert get(p.addr, "/x", host="orders").body == b"dyn GET /x"
    status, body, _ = admin(p.admin, "PUT", "/v1/services/orders/instances/o1", {"address": b.address, "weight": 3})
    assert status == 200 and body["weight"] == 3


def test_post_generates_id(backends, proxies):
    b = backends()
    p = proxies("")
    status, body, _ = admin(p.admin, "POST", "/v1/services/web/instances", {"address": b.address})
    assert status == 201 and body["id"].startswith("web-")
    status, body2, _ = admin(p.admin, "POST", "/v1/services/web/instances", {"address": b.address})
    assert body2["id"] != body["id"]
    status, body, _ = admin(p.admin, "POST", "/v1/services/web/instances", {"address": b.address, "id": "x"})
    assert status == 400 and "id" in body["message"]


def test_deregister_stops_traffic_after_answer(backends, proxies):
    a, b = backends(name="a"), backends(name="b")
    p = proxies("")
    for name, be in (("a", a), ("b", b)):
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/{name}", {"address": be.address})[0] == 201
    status, body, _ = admin(p.admin, "DELETE", "/v1/services/s/instances/a")
    assert status == 204
    for _ in range(6):
        assert get(p.addr, host="s").body.startswith(b"b ")
    assert admin(p.admin, "DELETE", "/v1/services/s/instances/a")[0] == 404


def test_drain_finishes_in_flight_and_sends_no_new_requests(backends, proxies):
    release = threading.Event()

    def slow(conn, req, _):
        from harness import respond
        if req.target == "/slow":
            release.wait(10)
        respond(conn, 200, b"a " + req.target.encode())
        return True

    a = backends(slow, name="a")
    b = backends(name="b")
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/s/instances/a", {"address": a.address})
    admin(p.admin, "PUT", "/v1/services/s/instances/b", {"address": b.address})
    c = Client(p.addr)
    # Round robin: first request goes to a (ids in order a, b).
    c.send(b"GET /slow HTTP/1.1\r\nHost: s\r\n\r\n")
    wait_until(lambda: any(r.target == "/slow" for r in a.requests), what="slow request at a")
    status, body, _ = admin(p.admin, "PUT", "/v1/services/s/instances/a/drain", {"enabled": True})
    assert status == 200 and body["draining"] is True
    st, inst, _ = admin(p.admin, "GET", "/v1/services/s/instances/a")
    assert inst["state"] == "draining" and "draining" in inst["why"]
    before = len(a.requests)
    for _ in range(6):
        assert get(p.addr, host="s").body.startswith(b"b ")
    assert len(a.requests) == before
    release.set()
    assert c.reader.read_response().body == b"a /slow"
    c.close()
    admin(p.admin, "PUT", "/v1/services/s/instances/a/drain", {"enabled": False})
    bodies = {get(p.addr, host="s").body.split()[0] for _ in range(4)}
    assert bodies == {b"a", b"b"}


def test_validation_errors_name_the_field(proxies):
    p = proxies("")
    cases = [
        (b"not json", "bad_json"),
        ({"weight": 1}, "address"),
        ({"address": "nowhere"}, "address"),
        ({"address": "127.0.0.1:70000"}, "address"),
        ({"address": "127.0.0.1:9", "weight": 0}, "weight"),
        ({"address": "127.0.0.1:9", "weight": "heavy"}, "weight"),
        ({"address": "127.0.0.1:9", "ttl": "soon"}, "ttl"),
        ({"address": "127.0.0.1:9", "ttl": "10ms"}, "ttl"),
        ({"address": "127.0.0.1:9", "tags": "a"}, "tags"),
        ({"address": "127.0.0.1:9", "meta": {"a": 1}}, "meta.a"),
        ({"address": "127.0.0.1:9", "colour": "red"}, "colour"),
        ({"address": "127.0.0.1:9", "health_check": {"type": "icmp"}}, "health_check.type"),
        ({"address": "127.0.0.1:9", "routes": [{"path_prefix": "x"}]}, "path_prefix"),
    ]
    for body, word in cases:
        status, out, r = admin(p.admin, "PUT", "/v1/services/s/instances/i", body)
        assert status == 400, (body, out)
        assert word in out["message"] or word == out["error"], (body, out)
    assert admin(p.admin, "PUT", "/v1/services/bad%20name/instances/i", {"address": "127.0.0.1:9"})[0] == 400
    assert admin(p.admin, "PUT", "/v1/services/s/instances/" + "x" * 200, {"address": "127.0.0.1:9"})[0] == 400
    # Nothing of the above reached the registry.
    assert admin(p.admin, "GET", "/v1/services")[1]["services"] == []


def test_own_listener_address_refused(proxies):
    p = proxies("")
    for port in (p.addr[1], p.admin[1]):
        status, body, _ = admin(p.admin, "PUT", "/v1/services/s/instances/i", {"address": f"127.0.0.1:{port}"})
        assert status == 400 and "loop" in body["message"]


def test_body_size_limit_and_malformed_http(proxies):
    p = proxies("")
    status, body, _ = admin(p.admin, "PUT", "/v1/services/s/instances/i", b"{" + b" " * (2 << 20) + b"}")
    assert status == 413
    c = Client(p.admin)
    c.send(b"GARBAGE\r\n\r\n")
    assert c.reader.read_response().status == 400
    assert admin(p.admin, "GET", "/healthz")[0] == 200


def test_heartbeat_and_ttl_expiry(backends, proxies):
    b = backends()
    p = proxies("registry: { default_ttl: 1s }\n")
    admin(p.admin, "PUT", "/v1/services/s/instances/i", {"address": b.address})
    admin(p.admin, "PUT", "/v1/services/s/instances/j", {"address": b.address, "ttl": "30s"})
    admin(p.admin, "PUT", "/v1/services/s/instances/k", {"address": b.address, "ttl": "30s"})
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        status, body, _ = admin(p.admin, "PUT", "/v1/services/s/instances/i/heartbeat")
        assert status == 200
        time.sleep(0.2)  # a client heartbeating every 200 ms against a 1 s lease (behaviour, not readiness)
    assert admin(p.admin, "GET", "/v1/services/s/instances/i")[0] == 200  # kept alive by heartbeats
    wait_until(lambda: admin(p.admin, "GET", "/v1/services/s/instances/i")[0] == 404, 5, what="lease expiry")
    p.wait_log("lease expired, instance removed: s/i")
    assert admin(p.admin, "PUT", "/v1/services/s/instances/i/heartbeat")[0] == 404  # register again
    assert admin(p.admin, "GET", "/v1/services/s/instances/j")[0] == 200


def test_mass_expiry_keeps_stale_instances_routable(backends, proxies):
    b = backends()
    p = proxies("registry: { default_ttl: 1s }\n")
    for i in range(4):
        admin(p.admin, "PUT", f"/v1/services/s/instances/i{i}", {"address": b.address})
    def states():
        return [i["state"] for i in admin(p.admin, "GET", "/v1/services/s")[1]["instances"]]

    # Each lease runs out in turn; none is removed, all four end up stale.
    wait_until(lambda: states() == ["stale"] * 4, 5, what="all four stale")
    p.wait_log("mass expiry")
    assert get(p.addr, host="s").status == 200  # still routed: better than nothing
    assert admin(p.admin, "GET", "/v1/services/s?healthy=1")[1]["instances"] == []
    metrics = admin(p.admin, "GET", "/metrics")[1]
    assert 'switchyard_registry_instances{service="s",state="stale"} 4' in metrics
    assert admin(p.admin, "PUT", "/v1/services/s/instances/i2/heartbeat")[0] == 200
    assert admin(p.admin, "GET", "/v1/services/s/instances/i2")[1]["state"] == "healthy"
    assert admin(p.admin, "DELETE", "/v1/services/s/instances/i3")[0] == 204


def test_service_views_filters_and_why(backends, proxies):
    b = backends()
    p = proxies("services:\n" + service_config("web", [b]))
    admin(p.admin, "PUT", "/v1/services/web/instances/d1", {"address": b.address, "tags": ["canary"]})
    status, body, r = admin(p.admin, "GET", "/v1/services")
    assert status == 200 and body["services"][0]["name"] == "web" and body["services"][0]["instances"] == 2
    status, body, r = admin(p.admin, "GET", "/v1/services/web")
    assert {i["source"] for i in body["instances"]} == {"static", "dynamic"}
    assert r.header("x-switchyard-index")
    assert [i["id"] for i in admin(p.admin, "GET", "/v1/services/web?tag=canary")[1]["instances"]] == ["d1"]
    assert len(admin(p.admin, "GET", "/v1/services/web?healthy=1")[1]["instances"]) == 2
    st, inst, _ = admin(p.admin, "GET", "/v1/services/web/instances/d1")
    assert "routable" in inst["why"] and "lease" in inst["why"]
    assert admin(p.admin, "GET", "/v1/services/nosuch")[0] == 404
    assert admin(p.admin, "DELETE", f"/v1/services/web/instances/{b.address}")[0] == 409  # static


def test_long_poll_waits_for_a_change(backends, proxies):
    b = backends()
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/s/instances/a", {"address": b.address})
    _, body, r = admin(p.admin, "GET", "/v1/services/s")
    index = int(r.header("x-switchyard-index"))
    # Index already passed: answered at once, not after the 60 s wait (the bound leaves a slow
    # sanitizer build plenty of room).
    t0 = time.monotonic()
    admin(p.admin, "GET", f"/v1/services/s?index={index - 1}&wait=60s")
    assert time.monotonic() - t0 < 30
    # Blocks until a change.
    result = {}

    def poll():
        result["r"] = admin(p.admin, "GET", f"/v1/services/s?index={index}&wait=10s")

    t = threading.Thread(target=poll)
    t.start()
    # Parked (the proxy says so), and still blocked: no answer came with nothing changed.
    wait_until(lambda: "switchyard_admin_long_polls 1" in admin(p.admin, "GET", "/metrics")[1], 30, what="the poll parked")
    assert t.is_alive()
    admin(p.admin, "PUT", "/v1/services/s/instances/b", {"address": b.address})
    t.join(60)
    assert not t.is_alive(), "the change did not answer the long poll"
    status, body, r = result["r"]
    assert status == 200 and len(body["instances"]) == 2 and int(r.header("x-switchyard-index")) > index
    # The wait is honoured when nothing changes.
    t0 = time.monotonic()
    _, _, r = admin(p.admin, "GET", f"/v1/services/s?index={int(r.header('x-switchyard-index'))}&wait=400ms")
    assert 0.3 < time.monotonic() - t0 < 30  # the 400 ms wait, not the 5 min default (room for a slow machine)


def test_long_poll_is_woken_only_by_its_own_service(backends, proxies):
    """Changes to other services do not answer a long poll (if one did, its answer would lack c)."""
    b = backends()
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/s/instances/a", {"address": b.address})
    _, _, r = admin(p.admin, "GET", "/v1/services/s")
    index = int(r.header("x-switchyard-index"))
    result = {}
    t = threading.Thread(target=lambda: result.update(r=admin(p.admin, "GET", f"/v1/services/s?index={index}&wait=60s")))
    t.start()
    for i in range(20):
        assert admin(p.admin, "PUT", f"/v1/services/other/instances/o{i}", {"address": b.address})[0] == 201
    assert admin(p.admin, "PUT", "/v1/services/s/instances/c", {"address": b.address})[0] == 201
    t.join(120)
    assert not t.is_alive()
    status, body, _ = result["r"]
    assert status == 200 and sorted(i["id"] for i in body["instances"]) == ["a", "c"]


def test_token_protects_mutations(backends, proxies):
    b = backends()
    p = proxies("admin:\n  listen: 127.0.0.1:0\n  token: s3cret-token\n")
    body = {"address": b.address}
    status, out, r = admin(p.admin, "PUT", "/v1/services/s/instances/a", body)
    assert status == 401 and out["error"] == "unauthorized"
    assert admin(p.admin, "PUT", "/v1/services/s/instances/a", body, [("Authorization", "Bearer wrong")])[0] == 401
    assert admin(p.admin, "PUT", "/v1/services/s/instances/a", body, [("Authorization", "Bearer s3cret-token")])[0] == 201
    assert admin(p.admin, "GET", "/v1/services/s")[0] == 200  # reads stay open
    assert admin(p.admin, "DELETE", "/v1/services/s/instances/a")[0] == 401


def test_catalog_post_and_get(backends, proxies):
    b = backends(name="cat")
    p = proxies("")
    status, body, _ = admin(p.admin, "POST", "/v1/catalog", {"service_name": "my_service", "service_url": f"http://{b.address}"})
    assert status == 201 and body["service_name"] == "my_service"
    status, body, _ = admin(p.admin, "POST", "/v1/catalog", {"service_name": "my_service", "service_url": f"http://{b.address}/"})
    assert status == 200  # same address again: updated, not duplicated
    status, listing, _ = admin(p.admin, "GET", "/v1/catalog")
    assert [(e["service_name"], e["service_url"]) for e in listing] == [("my_service", f"http://{b.address}")]
    assert get(p.addr, host="my_service").body == b"cat GET /"
    assert admin(p.admin, "POST", "/v1/catalog", {"service_name": "x", "service_url": "ftp://a"})[0] == 400
    assert admin(p.admin, "POST", "/v1/catalog", {"service_name": "x"})[0] == 400


def test_registration_routes(backends, proxies):
    b = backends(name="r")
    p = proxies("")
    admin(p.admin, "PUT", "/v1/services/blog/instances/a",
          {"address": b.address, "routes": [{"host": "www.example", "path_prefix": "/blog", "strip_prefix": True}]})
    assert get(p.addr, "/blog/post/1", host="www.example").body == b"r GET /post/1"
    # Another service claiming the same host and prefix: the earlier registration keeps it, and
    # the answer says so.
    other = backends(name="o")
    st, body, _ = admin(p.admin, "PUT", "/v1/services/other/instances/x",
                        {"address": other.address, "routes": [{"host": "www.example", "path_prefix": "/blog"}]})
    assert st == 201 and "registered it first" in body["route_conflicts"][0]["conflict"]
    assert get(p.addr, "/blog/post/1", host="www.example").body == b"r GET /post/1"
    admin(p.admin, "DELETE", "/v1/services/blog/instances/a")
    # The route left with the last instance that carried it; the other service's claim now holds.
    assert get(p.addr, "/blog/post/1", host="www.example").body == b"o GET /blog/post/1"
    admin(p.admin, "DELETE", "/v1/services/other/instances/x")
    assert get(p.addr, "/blog/post/1", host="www.example").status == 404


def test_config_route_wins_over_registration(backends, proxies):
    cfgd, reg = backends(name="cfg"), backends(name="reg")
    p = proxies(f"routes:\n  - match: {{ host: www.example, path_prefix: /blog }}\n    service: blog\n"
                f"services:\n  blog:\n    instances:\n      - {{ address: {cfgd.address} }}\n")
    st, body, _ = admin(p.admin, "PUT", "/v1/services/intruder/instances/x",
                        {"address": reg.address, "routes": [{"host": "www.example", "path_prefix": "/blog"}]})
    assert st == 201 and "config routes win" in body["route_conflicts"][0]["conflict"]
    assert get(p.addr, "/blog/1", host="www.example").body == b"cfg GET /blog/1"


def test_healthz_readyz_metrics_reload(backends, proxies):
    b = backends()
    p = proxies("services:\n" + service_config("svc", [b]))
    assert admin(p.admin, "GET", "/healthz")[0] == 200
    assert admin(p.admin, "GET", "/readyz")[0] == 200
    for _ in range(3):
        get(p.addr, host="svc")
    get(p.addr, host="nosuch")
    # A worker thread counts an exchange just after its last byte went out: poll, don't race it.
    wait_until(lambda: 'switchyard_requests_total{code="404",protocol="http1",service="none"} 1' in admin(p.admin, "GET", "/metrics")[1],
               5, what="the 404 counted")
    text = admin(p.admin, "GET", "/metrics")[1]
    assert 'switchyard_requests_total{code="200",protocol="http1",service="svc"} 3' in text
    assert "switchyard_request_duration_seconds_bucket" in text
    assert 'switchyard_build_info{version="' in text
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text
    assert "switchyard_downstream_connections" in text
    # Reload through the API.
    p.write_config("services:\n" + service_config("svc", [b]) + service_config("other", [b]))
    status, body, _ = admin(p.admin, "POST", "/v1/reload")
    assert status == 200 and "service added: other" in body["changes"]
    p.write_config("services: [")
    status, body, _ = admin(p.admin, "POST", "/v1/reload")
    assert status == 400 and p.config_path in body["message"]
    assert get(p.addr, host="other").status == 200


def test_unknown_endpoints_and_methods(proxies):
    p = proxies("")
    assert admin(p.admin, "GET", "/nope")[0] == 404
    assert admin(p.admin, "PATCH", "/v1/services")[0] == 405
    assert admin(p.admin, "DELETE", "/v1/catalog")[0] == 405


@pytest.mark.parametrize("query,param", [
    ("index=-1&wait=30s", "'index'"), ("index=1.5&wait=30s", "'index'"), ("index=abc", "'index'"),
    ("index=%2B5&wait=30s", "'index'"), ("index=99999999999999999999999&wait=30s", "'index'"),
    ("index=+5&wait=30s", "'index'"), ("index=5&wait=-1s", "'wait'"), ("index=5&wait=soon", "'wait'"),
    ("healthy=maybe", "'healthy'"),
])
def test_query_numbers_are_strict(backends, proxies, query, param):
    """Every numeric parameter is parsed whole: anything else is 400 naming it, at once (never a
    long poll on a misread number)."""
    b = backends()
    p = proxies("services:\n" + service_config("web", [b]))
    t0 = time.monotonic()
    st, body, _ = admin(p.admin, "GET", "/v1/services/web?" + query)
    assert st == 400, body
    assert param in body["message"]
    assert time.monotonic() - t0 < 20  # answered at once, not held for the 30 s long poll


def test_pipelined_changes_do_not_wait_a_tick_each(backends, proxies):
    # Changes are acknowledged at the end of the loop turn; a pipelined one is parsed in a write
    # callback with no I/O to end that turn, and used to wait for the next 100 ms tick. 200 such
    # waits are 20 s whatever the machine's speed; without them 200 registrations take well under
    # 10 s even under a sanitizer on a slow machine.
    import json as _json
    b = backends()
    p = proxies("")
    c = Client(p.admin, timeout=60)
    t0 = time.monotonic()
    for start in range(0, 200, 25):  # batches that fit the socket buffers (the client writes first)
        reqs = b""
        for i in range(start, start + 25):
            body = _json.dumps({"address": b.address, "ttl": "0s"}).encode()
            reqs += (f"PUT /v1/services/pipe/instances/i{i} HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        c.send(reqs)
        for _ in range(25):
            assert c.reader.read_response().status == 201
    assert time.monotonic() - t0 < 10
    assert len(admin(p.admin, "GET", "/v1/services/pipe")[1]["instances"]) == 200
