"""The control plane keeps what it is told: a config-file instance stays as the file says on every
way in, a reload cannot do what a start would refuse, a failed journal write loses nothing and
stops no later start, query strings are read by key. Covers the admin listener (HTTP/1.1, plain)."""
import glob
import json
import os
import signal

from harness import admin, get, wait_until


def test_a_registration_never_replaces_a_config_file_instance(backends, proxies):
    b, other = backends(name="static"), backends(name="other")
    port = int(other.address.split(":")[1])
    p = proxies("services:\n  web:\n    instances:\n"
                f"      - {{ address: {b.address}, id: web-1 }}\n"
                f"      - {{ address: {b.address}, id: 127.0.0.1-{port} }}\n")
    before = admin(p.admin, "GET", "/v1/services/web/instances/web-1")[1]
    # The native API: PUT with the id, 409 as DELETE answers.
    st, body, _ = admin(p.admin, "PUT", "/v1/services/web/instances/web-1", {"address": other.address, "ttl": "1s"})
    assert st == 409 and body["error"] == "static_instance", body
    assert admin(p.admin, "DELETE", "/v1/services/web/instances/web-1")[0] == 409
    # The seed catalog derives its id from the address: the same 409.
    st, body, _ = admin(p.admin, "POST", "/v1/catalog", {"service_name": "web", "service_url": f"http://{other.address}"})
    assert st == 409 and body["error"] == "static_instance", body
    # Consul's agent registration.
    st, text, _ = admin(p.admin, "PUT", "/v1/agent/service/register",
                        {"Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": port})
    assert st == 409 and "config file" in text, text
    # Eureka's.
    st, body, _ = admin(p.admin, "POST", "/eureka/v2/apps/WEB",
                        {"instance": {"instanceId": "web-1", "app": "WEB", "ipAddr": "127.0.0.1", "port": {"$": port},
                                      "status": "UP"}})
    assert st == 409 and body["error"] == "static_instance", body
    after = admin(p.admin, "GET", "/v1/services/web/instances/web-1")[1]
    assert after["source"] == "static" and after["address"] == b.address and "lease_remaining_ms" not in after
    assert {k: v for k, v in after.items() if k != "why"} == {k: v for k, v in before.items() if k != "why"}
    # Traffic still goes to the file's instances only.
    assert {get(p.addr, host="web").body.split()[0] for _ in range(4)} == {b"static"}
    # A reload keeps it, and says nothing was skipped.
    st, summary, _ = admin(p.admin, "POST", "/v1/reload")
    assert st == 200 and not any("skipped" in c for c in summary["changes"]), summary


def test_a_reload_that_adds_a_static_id_already_registered_says_where(backends, proxies):
    b = backends()
    p = proxies("services:\n  web: {}\n")
    assert admin(p.admin, "PUT", "/v1/services/web/instances/w1", {"address": b.address})[0] == 201
    p.write_config(f"services:\n  web:\n    instances:\n      - {{ address: {b.address}, id: w1 }}\n")
    st, summary, _ = admin(p.admin, "POST", "/v1/reload")
    assert st == 200
    skipped = [c for c in summary["changes"] if "skipped" in c]
    assert len(skipped) == 1 and skipped[0].startswith(p.config_path + ":"), summary
    assert admin(p.admin, "GET", "/v1/services/web/instances/w1")[1]["source"] == "dynamic"


def test_a_reload_cannot_open_the_admin_api_beyond_loopback(backends, proxies):
    token = "s3cret-token"
    p = proxies(f"admin:\n  listen: 0.0.0.0:0\n  token: {token}\n")
    auth = [("Authorization", f"Bearer {token}")]
    addr = ("127.0.0.1", p.admin[1])
    p.write_config("admin:\n  listen: 0.0.0.0:0\n  token: \"\"\n")
    # --check, POST /v1/reload and SIGHUP say the same thing, at the same place.
    import subprocess
    from harness import BIN
    chk = subprocess.run([BIN, "--check", "-c", p.config_path], capture_output=True, text=True)
    assert chk.returncode == 1
    line = 1 + open(p.config_path).read().splitlines().index('  token: ""')
    where = f"{p.config_path}:{line}:10: admin.listen"  # at the empty token
    assert where in chk.stdout + chk.stderr, chk.stdout + chk.stderr
    st, body, _ = admin(addr, "POST", "/v1/reload", headers=auth)
    assert st == 400 and body["error"] == "bad_config" and where in body["message"], body
    p.proc.send_signal(signal.SIGHUP)
    p.wait_log("reload rejected")
    # The old config keeps serving: mutations still need the token.
    b = backends()
    st, body, _ = admin(addr, "PUT", "/v1/services/s/instances/x", {"address": b.address})
    assert st == 401, body
    assert admin(addr, "PUT", "/v1/services/s/instances/x", {"address": b.address}, headers=auth)[0] == 201


def test_consul_passing_filter_is_read_by_key(backends, proxies):
    b = backends()
    port = int(b.address.split(":")[1])
    p = proxies("")
    # A TTL check that has not passed: critical.
    st, _, _ = admin(p.admin, "PUT", "/v1/agent/service/register",
                     {"Name": "api", "ID": "api-1", "Address": "127.0.0.1", "Port": port, "Tags": ["passing-x"],
                      "Check": {"TTL": "30s"}})
    assert st == 200
    assert len(admin(p.admin, "GET", "/v1/health/service/api?tag=passing-x")[1]) == 1  # a tag, not the filter
    assert admin(p.admin, "GET", "/v1/health/service/api?passing")[1] == []
    assert admin(p.admin, "GET", "/v1/health/service/api?passing=true")[1] == []
    assert len(admin(p.admin, "GET", "/v1/health/service/api?passing=false")[1]) == 1
    assert len(admin(p.admin, "GET", "/v1/health/service/api?notpassing=1")[1]) == 1


def journal_lines(snap):
    files = sorted(glob.glob(str(snap) + ".journal.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    return [line for f in files for line in open(f, "rb").read().split(b"\n")]


def test_a_failed_journal_write_is_cut_back_answered_503_and_the_next_start_loads(backends, proxies, tmp_path):
    """The file-size limit (RLIMIT_FSIZE) fills the disk on purpose: an append stops mid-record."""
    b = backends()
    snap = tmp_path / "registry.json"
    cfg = f"registry:\n  snapshot: {snap}\n"
    limit = 16384
    p = proxies(cfg, prefix=["prlimit", f"--fsize={limit}"])
    acked, refused = [], []
    meta = {"blob": "x" * 700}  # about 800 bytes a record: the limit falls inside one
    for i in range(60):
        st, body, _ = admin(p.admin, "PUT", f"/v1/services/s/instances/i{i}", {"address": b.address, "meta": meta})
        if st == 201:
            acked.append(f"i{i}")
        else:
            assert st == 503 and body["error"] == "registry_write_failed", (st, body)
            refused.append(f"i{i}")
        if len(refused) >= 3:
            break
    assert acked and len(refused) == 3, (acked, refused)
    p.wait_log("registry changes not saved")
    # Nothing torn is left behind: every line of the journal is whole.
    lines = journal_lines(snap)
    assert lines[-1] == b"" and all(json.loads(l) for l in lines[:-1])
    # Reads still answer (the change is in memory), and traffic flows.
    assert len(admin(p.admin, "GET", "/v1/services/s")[1]["instances"]) == len(acked) + len(refused)
    assert get(p.addr, host="s").status == 200
    assert p.stop() == 0
    # The next start, with room on the disk, loads everything acknowledged.
    p2 = proxies(cfg)
    ids = {i["id"] for i in admin(p2.admin, "GET", "/v1/services/s")[1]["instances"]}
    assert set(acked) <= ids, (acked, ids)
    # And appends go on: a refused registration sent again is kept.
    assert admin(p2.admin, "PUT", f"/v1/services/s/instances/{refused[0]}", {"address": b.address})[0] in (200, 201)
    p2.stop()
    p3 = proxies(cfg)
    assert refused[0] in {i["id"] for i in admin(p3.admin, "GET", "/v1/services/s")[1]["instances"]}
