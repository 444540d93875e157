"""Registry persistence: clean restarts, kill -9 in the middle of a burst, corrupt files."""
import json
import os
import signal
import subprocess
import threading
import time

from harness import BIN, Client, Proxy, admin, get, wait_until


def journal_records(snap):
    """Every record of every journal beside the snapshot file, in order."""
    import glob
    files = sorted(glob.glob(str(snap) + ".journal.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    return [json.loads(line) for f in files for line in open(f).read().splitlines()]


def config(snapshot, extra=""):
    return f"registry:\n  snapshot: {snapshot}\n  default_ttl: 30s\n" + extra


def test_registrations_survive_a_clean_restart(backends, proxies, tmp_path):
    b = backends(name="p")
    snap = tmp_path / "registry.json"
    p = proxies(config(snap))
    assert admin(p.admin, "PUT", "/v1/services/s/instances/a", {"address": b.address, "tags": ["x"], "meta": {"k": "v"}})[0] == 201
    assert admin(p.admin, "PUT", "/v1/services/s/instances/b/drain", {"enabled": True})[0] == 404
    assert admin(p.admin, "PUT", "/v1/services/s/instances/c", {"address": b.address})[0] == 201
    assert admin(p.admin, "PUT", "/v1/services/s/instances/c/drain", {"enabled": True})[0] == 200
    assert p.stop() == 0
    assert {r["put"]["id"] for r in journal_records(snap) if "put" in r} == {"a", "c"}
    p2 = proxies(config(snap))
    _, body, _ = admin(p2.admin, "GET", "/v1/services/s")
    got = {i["id"]: i for i in body["instances"]}
    assert got["a"]["tags"] == ["x"] and got["a"]["meta"] == {"k": "v"} and got["c"]["state"] == "draining"
    assert get(p2.addr, host="s").body == b"p GET /"
    p2.wait_log("registry snapshot loaded")


def test_kill_9_during_a_burst_loses_no_acknowledged_registration(backends, tmp_path):
    b = backends()
    snap = tmp_path / "registry.json"
    p = Proxy(config(snap), tmpdir=str(tmp_path))
    acked = set()
    lock = threading.Lock()
    stop = threading.Event()

    def burst(worker):
        i = 0
        while not stop.is_set() and i < 2000:
            iid = f"w{worker}-{i}"
            try:
                status, _, _ = admin(p.admin, "PUT", f"/v1/services/burst/instances/{iid}", {"address": b.address})
            except (OSError, EOFError):
                return
            if status == 201:
                with lock:
                    acked.add(iid)
            i += 1

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 200, 30, what="200 acknowledged registrations")
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    p2 = Proxy(config(snap), tmpdir=str(tmp_path))
    try:
        _, body, _ = admin(p2.admin, "GET", "/v1/services/burst")
        present = {i["id"] for i in body["instances"]}
        missing = acked - present
        assert not missing, f"{len(missing)} acknowledged registrations lost, e.g. {sorted(missing)[:5]}"
        assert len(present) >= len(acked)
    finally:
        assert p2.stop() == 0


def test_corrupt_or_unreadable_snapshot_stops_start_up(tmp_path):
    snap = tmp_path / "registry.json"
    snap.write_text("{not json")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(Proxy.with_listeners(config(snap)))
    r = subprocess.run([BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert str(snap) in r.stderr and "corrupt" in r.stderr
    assert snap.read_text() == "{not json"  # never silently overwritten
    snap.write_text(json.dumps({"version": 1, "instances": [{"service": "s", "id": "a", "address": "nowhere"}]}))
    r = subprocess.run([BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "instance #1" in r.stderr
    os.chmod(snap, 0)
    if os.geteuid() != 0:  # root reads anything
        r = subprocess.run([BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1


def test_leases_restart_their_clock_after_restart(backends, proxies, tmp_path):
    b = backends()
    snap = tmp_path / "registry.json"
    p = proxies(config(snap))
    admin(p.admin, "PUT", "/v1/services/s/instances/a", {"address": b.address, "ttl": "2s"})
    p.stop()
    p2 = proxies(config(snap))
    _, inst, _ = admin(p2.admin, "GET", "/v1/services/s/instances/a")
    assert inst["lease_remaining_ms"] > 1000
    wait_until(lambda: admin(p2.admin, "GET", "/v1/services/s/instances/a")[0] == 404, 6, what="lease expiry after restart")


# Every field a registration can carry, none at its default.
FULL_REGISTRATION = {
    "weight": 7,
    "tags": ["v2", "canary"],
    "meta": {"team": "shop", "build": "1234"},
    "zone": "eu-1",
    "ttl": "45s",
    "routes": [{"host": "shop.example", "path_prefix": "/api", "strip_prefix": True}],
    "health_check": {"type": "http", "path": "/ready", "host": "probe.example", "expected_status": ["200", "204-206"],
                     "interval": "1h", "timeout": "750ms", "jitter": "25%", "healthy_threshold": 4,
                     "unhealthy_threshold": 6},
}


def volatile(inst):
    """An instance view without what moves by itself (lease countdown, probe verdict)."""
    return {k: v for k, v in inst.items() if k not in ("lease_remaining_ms", "why", "state")}


def test_every_registration_field_survives_kill_9(backends, tmp_path):
    """register → GET → kill -9 → restart → GET: the same document, health check included."""
    b = backends()
    snap = tmp_path / "registry.json"
    p = Proxy(config(snap), tmpdir=str(tmp_path))
    try:
        body = dict(FULL_REGISTRATION, address=b.address)
        st, reg, _ = admin(p.admin, "PUT", "/v1/services/shop/instances/o1", body)
        assert st == 201, reg
        assert admin(p.admin, "PUT", "/v1/services/shop/instances/o1/drain", {"enabled": True})[0] == 200
        st, before, _ = admin(p.admin, "GET", "/v1/services/shop/instances/o1")
        assert st == 200
        # The view shows what was registered, field for field.
        for k, v in body.items():
            assert before[k] == v, (k, before[k], v)
        assert before["health_check_from"] == "registration"
        assert before["draining"] is True and before["state"] == "draining"
    finally:
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait()
    p2 = Proxy(config(snap), tmpdir=str(tmp_path))
    try:
        st, after, _ = admin(p2.admin, "GET", "/v1/services/shop/instances/o1")
        assert st == 200
        assert volatile(after) == volatile(before)
        assert after["state"] == "draining"
    finally:
        assert p2.stop() == 0


def test_instance_view_shows_the_health_check_that_probes_it(backends, proxies):
    b = backends()
    p = proxies("services:\n  svc:\n    health_check: { path: /hc, interval: 1h }\n")
    admin(p.admin, "PUT", "/v1/services/svc/instances/own", {"address": b.address, "health_check": {"path": "/mine", "interval": "1h"}})
    admin(p.admin, "PUT", "/v1/services/svc/instances/inherits", {"address": b.address})
    admin(p.admin, "PUT", "/v1/services/other/instances/none", {"address": b.address})
    own = admin(p.admin, "GET", "/v1/services/svc/instances/own")[1]
    assert own["health_check"]["path"] == "/mine" and own["health_check_from"] == "registration"
    assert own["health_check"]["expected_status"] == ["200-399"] and own["health_check"]["jitter"] == "10%"
    inherits = admin(p.admin, "GET", "/v1/services/svc/instances/inherits")[1]
    assert inherits["health_check"]["path"] == "/hc" and inherits["health_check_from"] == "service"
    none = admin(p.admin, "GET", "/v1/services/other/instances/none")[1]
    assert none["health_check"] is None and none["health_check_from"] == "none"


def test_changing_any_health_check_field_restarts_the_probe(backends, proxies):
    """With interval 1h a probe runs only when a session starts: each re-registration that changes
    one field must bring a probe at once, with the new settings."""
    probes = []

    def handler(conn, req, backend):
        from harness import respond
        if req.header("user-agent") == "switchyard-health-check":
            probes.append((req.target, req.header("host")))
            respond(conn, 204 if req.target == "/nocontent" else 200, b"")
            return False
        respond(conn, 200, b"ok")
        return True

    b = backends(handler)
    p = proxies("")
    hc = {"type": "http", "path": "/ready", "interval": "1h", "timeout": "1s"}

    def register(check):
        st, _, _ = admin(p.admin, "PUT", "/v1/services/s/instances/a", {"address": b.address, "health_check": check})
        assert st in (200, 201)

    register(hc)
    wait_until(lambda: len(probes) == 1, 20, what="first probe")
    changes = [("host", "probe.example"), ("jitter", "0%"), ("healthy_threshold", 1), ("unhealthy_threshold", 1),
               ("timeout", "2s"), ("expected_status", ["200-204"]), ("path", "/other")]
    for field, value in changes:
        hc = dict(hc, **{field: value})
        n = len(probes)
        register(hc)
        wait_until(lambda: len(probes) > n, 20, what=f"a probe after changing {field}")
        assert probes[-1] == (hc["path"], hc.get("host", b.address)), (field, probes[-1])
    # expected_status decides: 204 is not in ["200"] → unhealthy; allowed again → healthy.
    hc = dict(hc, path="/nocontent", expected_status=["200"], unhealthy_threshold=1, healthy_threshold=1)
    register(hc)
    wait_until(lambda: admin(p.admin, "GET", "/v1/services/s/instances/a")[1]["state"] == "unhealthy", 20,
               what="unhealthy on 204")
    register(dict(hc, expected_status=["200-299"]))
    wait_until(lambda: admin(p.admin, "GET", "/v1/services/s/instances/a")[1]["state"] == "healthy", 20,
               what="healthy again once 204 is expected")


def test_version_1_snapshot_is_read(backends, proxies, tmp_path):
    """Snapshots written before the one-codec change load unchanged (what they held is kept)."""
    b = backends()
    snap = tmp_path / "registry.json"
    snap.write_text(json.dumps({"version": 1, "index": 9, "instances": [
        {"service": "s", "id": "a", "address": b.address, "weight": 3, "tags": ["t"], "meta": {"k": "v"}, "zone": "z",
         "ttl_ms": 45000, "draining": False, "routes": [],
         "health_check": {"type": "tcp", "path": "/health", "interval_ms": 3600000, "timeout_ms": 500,
                          "healthy_threshold": 2, "unhealthy_threshold": 3}}]}))
    p = proxies(config(snap))
    inst = admin(p.admin, "GET", "/v1/services/s/instances/a")[1]
    assert inst["weight"] == 3 and inst["ttl"] == "45s" and inst["zone"] == "z"
    assert inst["health_check"]["type"] == "tcp" and inst["health_check"]["interval"] == "1h"
    assert inst["health_check"]["timeout"] == "500ms"
    # The next change is acknowledged once it is in the journal; a restart has both.
    assert admin(p.admin, "PUT", "/v1/services/s/instances/b", {"address": b.address})[0] == 201
    assert [r["put"]["id"] for r in journal_records(snap)] == ["b"]
    p.stop()
    p2 = proxies(config(snap))
    assert {i["id"] for i in admin(p2.admin, "GET", "/v1/services/s")[1]["instances"]} == {"a", "b"}


def test_a_torn_journal_tail_is_dropped_and_nothing_acknowledged_is_lost(backends, proxies, tmp_path):
    b = backends()
    snap = tmp_path / "registry.json"
    p = proxies(config(snap))
    for i in range(5):
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/i{i}", {"address": b.address})[0] == 201
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait()
    p.killed = True
    journal = str(snap) + ".journal.0"
    with open(journal, "ab") as f:  # what a write cut short by power loss leaves
        f.write(b'{"put": {"service": "s", "id": "torn", "address": "127.0')
    p2 = proxies(config(snap))
    p2.wait_log("unfinished last record")
    ids = {i["id"] for i in admin(p2.admin, "GET", "/v1/services/s")[1]["instances"]}
    assert ids == {f"i{i}" for i in range(5)}
    # Appends go on after the last whole record.
    assert admin(p2.admin, "PUT", "/v1/services/s/instances/after", {"address": b.address})[0] == 201
    assert admin(p2.admin, "DELETE", "/v1/services/s/instances/i0")[0] == 204
    p2.stop()
    p3 = proxies(config(snap))
    ids = {i["id"] for i in admin(p3.admin, "GET", "/v1/services/s")[1]["instances"]}
    assert ids == {"i1", "i2", "i3", "i4", "after"}


def test_a_corrupt_journal_line_before_the_end_stops_start_up(tmp_path):
    snap = tmp_path / "registry.json"
    (tmp_path / "registry.json.journal.0").write_text('{"put": {"service": "s"}}\n{"del": {"service": "s", "id": "x"}}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(Proxy.with_listeners(config(snap)))
    r = subprocess.run([BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "journal" in r.stderr and "line 1" in r.stderr


def test_the_journal_is_compacted_into_the_snapshot(backends, proxies, tmp_path):
    """Past registry.journal_max the journal is folded into a new snapshot by a background thread;
    every change survives, before and after, and the old journal goes. The second compaction merges
    a snapshot the first one wrote (one instance per line, carried over as text)."""
    import glob
    b = backends()
    snap = tmp_path / "registry.json"
    p = proxies(config(snap, "  journal_max: 8KiB\n"))

    def compactions():
        return sum("registry snapshot compacted" in line for line in p.lines)

    for i in range(120):
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/i{i}", {"address": b.address, "meta": {"n": str(i)}})[0] == 201
    p.wait_log("registry snapshot compacted", timeout=120)
    first = compactions()
    # Updates of entries the snapshot holds, deletions of some, new ones: until a later compaction.
    n = 0
    while compactions() == first:
        assert n < 20000, "no second compaction"
        k = n % 120
        if k % 10 == 5:
            assert admin(p.admin, "DELETE", f"/v1/services/s/instances/i{k}")[0] in (204, 404)
        else:
            assert admin(p.admin, "PUT", f"/v1/services/s/instances/i{k}",
                         {"address": b.address, "meta": {"n": str(k), "round": str(n // 120)}})[0] in (200, 201)
        n += 1
    # The round of each entry's last update (None: never updated after the first loop).
    expected = {f"i{k}": (str((n - 1 - ((n - 1 - k) % 120)) // 120) if k < n else None)
                for k in range(120) if k % 10 != 5 or k >= n}
    for i in range(120, 130):
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/i{i}", {"address": b.address})[0] == 201
    doc = json.loads(snap.read_text())
    assert doc["version"] == 3 and doc["journal"] >= 2
    assert len(snap.read_text().splitlines()) == len(doc["instances"]) + 2  # one instance per line
    assert not glob.glob(str(snap) + ".journal.0")  # folded in and removed
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait()
    p.killed = True
    p2 = proxies(config(snap))
    inst = {i["id"]: i for i in admin(p2.admin, "GET", "/v1/services/s")[1]["instances"]}
    assert set(inst) == set(expected) | {f"i{i}" for i in range(120, 130)}
    for k, rnd in expected.items():
        assert inst[k]["meta"] == ({"n": k[1:], "round": rnd} if rnd else {"n": k[1:]}), k


def test_an_old_one_line_snapshot_is_compacted_without_losing_fields(backends, proxies, tmp_path):
    """A snapshot written by an earlier release (one line) is merged by the first compaction."""
    b = backends()
    snap = tmp_path / "registry.json"
    snap.write_text(json.dumps({"version": 1, "index": 9, "instances": [
        {"service": "s", "id": "old", "address": b.address, "weight": 7, "tags": ["t"], "meta": {"k": "v"},
         "zone": "z", "ttl_ms": 45000, "draining": False, "routes": []}]}))
    p = proxies(config(snap, "  journal_max: 4KiB\n"))
    for i in range(60):
        assert admin(p.admin, "PUT", f"/v1/services/s/instances/i{i}", {"address": b.address})[0] == 201
    p.wait_log("registry snapshot compacted", timeout=120)
    assert json.loads(snap.read_text())["version"] == 3
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait()
    p.killed = True
    p2 = proxies(config(snap))
    old = admin(p2.admin, "GET", "/v1/services/s/instances/old")[1]
    assert old["weight"] == 7 and old["ttl"] == "45s" and old["zone"] == "z" and old["meta"] == {"k": "v"}
    assert len(admin(p2.admin, "GET", "/v1/services/s")[1]["instances"]) == 61
