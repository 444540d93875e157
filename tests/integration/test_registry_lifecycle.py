"""Registry persistence: clean restarts, kill -9 in the middle of a burst, corrupt files."""
import json
import os
import signal
import subprocess
import threading
import time

from harness import BIN, Client, Proxy, admin, get, wait_until


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
    doc = json.loads(snap.read_text())
    assert {i["id"] for i in doc["instances"]} == {"a", "c"}
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
