"""Command line, config checking, SIGHUP reload and SIGTERM drain, on the real binary."""
import os
import signal
import subprocess
import threading
import time

from conftest import holding_backend, service_config
from harness import BIN, Client, get, respond, wait_until


def run(*args, cwd=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=20, cwd=cwd)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("switchyard ")
    r = run("--help")
    assert r.returncode == 0 and "--check" in r.stdout and "-c FILE" in r.stdout
    r = run("--bogus")
    assert r.returncode == 2 and "unknown argument" in r.stderr


def test_check_ok_and_every_error_with_position(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("listen: 127.0.0.1:8080\nroutes:\n  - match: { host: a }\n    service: not-defined-yet\n")
    r = run("--check", "-c", str(good))
    assert r.returncode == 0 and r.stdout.strip() == f"{good}: ok"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: 127.0.0.1:99999\n"          # 1: bad port
        "workers: -1\n"                      # 2: bad number
        "colour: blue\n"                     # 3: unknown key
        "client:\n"
        "  header_timeout: 10 parsecs\n"     # 5: bad duration
        "  max_header_bytes: 12XB\n"         # 6: bad size
        "services:\n"
        "  orders:\n"
        "    lb: fastest\n"                  # 9: bad enum
        "    instances:\n"
        "      - { address: nowhere }\n"     # 11: bad address
        "    retry: { attempts: 99 }\n"      # 12: out of range
        "    timeouts: [1, 2]\n"             # 13: wrong type
    )
    r = run("--check", "-c", str(bad))
    assert r.returncode == 1
    lines = r.stdout.strip().split("\n")
    positions = [l.split(": ", 1)[0] for l in lines]
    expect = {1: "listen", 2: "workers", 3: "colour", 5: "header_timeout", 6: "max_header_bytes",
              9: "lb", 11: "address", 12: "attempts", 13: "timeouts"}
    for line_no, word in expect.items():
        assert any(p.startswith(f"{bad}:{line_no}:") and word in l for p, l in zip(positions, lines)), (line_no, lines)
    assert len(lines) == len(expect), lines


def test_check_reports_yaml_syntax_error(tmp_path):
    bad = tmp_path / "syntax.yaml"
    bad.write_text("services:\n  a: [1, 2\n")
    r = run("--check", "-c", str(bad))
    assert r.returncode == 1 and r.stdout.startswith(f"{bad}:") and "YAML" in r.stdout


def test_missing_explicit_config_fails(tmp_path):
    r = run("-c", str(tmp_path / "nope.yaml"))
    assert r.returncode == 1 and "cannot open" in r.stdout + r.stderr


def test_defaults_without_a_file_are_useful(tmp_path):
    # No -c and no conf/switchyard.yaml in the working directory: the built-in defaults apply.
    r = run("--check", cwd=str(tmp_path))
    assert r.returncode == 0 and "ok" in r.stdout


def test_admin_beyond_loopback_needs_token(proxies, tmp_path):
    cfg = tmp_path / "open.yaml"
    cfg.write_text("listen: 127.0.0.1:0\nadmin: { listen: 0.0.0.0:0 }\n")
    r = subprocess.run([BIN, "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "token" in r.stderr


def test_sighup_reload_adds_routes_keeps_in_flight_and_rejects_bad_file(backends, proxies):
    release = threading.Event()

    def slow(conn, req, _):
        if req.target == "/slow":
            release.wait(10)
        respond(conn, 200, b"one " + req.target.encode())
        return True

    one = backends(slow)
    two = backends(lambda c, r, b: respond(c, 200, b"two") or True)
    p = proxies("services:\n" + service_config("one", [one]))
    assert get(p.addr, host="two").status == 404

    in_flight = Client(p.addr)
    in_flight.send(b"GET /slow HTTP/1.1\r\nHost: one\r\n\r\n")
    wait_until(lambda: any(r.target == "/slow" for r in one.requests), what="slow request at backend")

    p.write_config("services:\n" + service_config("one", [one]) + service_config("two", [two]))
    p.send_signal(signal.SIGHUP)
    wait_until(lambda: get(p.addr, host="two").status == 200, what="new service after reload")
    release.set()
    r = in_flight.reader.read_response()
    assert r.status == 200 and r.body == b"one /slow"
    in_flight.close()

    # A broken file is refused; the old config keeps serving.
    p.write_config("services:\n  one: { lb: nonsense }\n")
    p.send_signal(signal.SIGHUP)
    p.wait_log("reload rejected")
    assert any(":" in l and "lb" in l for l in p.lines if "nonsense" in l)
    assert get(p.addr, host="two").status == 200


def test_sigterm_drains_in_flight_then_exits_zero(backends, proxies):
    b, release = holding_backend(backends, body=b"done")
    p = proxies("shutdown_timeout: 10s\nservices:\n" + service_config("svc", [b]))
    idle = Client(p.addr)
    busy = Client(p.addr)
    busy.send(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
    wait_until(lambda: len(b.requests) == 1, what="request at backend")
    p.send_signal(signal.SIGTERM)
    p.wait_log("shutting down")
    assert idle.closed_by_peer()  # idle keep-alive connections close at once
    # New connections are refused once the listener is closed.
    wait_until(lambda: _refused(p.addr), what="listener closed")
    release.set()
    r = busy.reader.read_response()
    assert r.status == 200 and r.body == b"done" and r.header("connection") == "close"
    assert p.proc.wait(10) == 0


def test_sigterm_gives_up_after_shutdown_timeout(backends, proxies, tmp_path):
    release = threading.Event()

    def hang(conn, req, _):
        if req.target == "/streaming":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        release.wait(30)
        return False

    b = backends(hang)
    log = tmp_path / "access.log"
    p = proxies(f"shutdown_timeout: 300ms\naccess_log: {log}\nservices:\n" + service_config("svc", [b]))
    try:
        waiting, streaming = Client(p.addr), Client(p.addr)
        waiting.send(b"GET /waiting HTTP/1.1\r\nHost: svc\r\n\r\n")
        streaming.send(b"GET /streaming HTTP/1.1\r\nHost: svc\r\n\r\n")
        wait_until(lambda: len(b.requests) == 2, what="requests at backend")
        start, _ = streaming.reader.read_head()  # its answer has begun
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.proc.wait(10) == 0
        assert time.monotonic() - t0 < 3
        # No answer had begun: 503 with Connection: close, not a silent close.
        r = waiting.reader.read_response()
        assert r.status == 503 and r.header("connection") == "close"
        assert r.header("x-switchyard-error") == "shutting_down"
        # An answer under way is cut (never padded).
        assert streaming.closed_by_peer(5)
        # Both have their access-log line.
        import json
        lines = [json.loads(l) for l in log.read_text().splitlines()]
        by_path = {l["path"]: l for l in lines}
        assert by_path["/waiting"]["status"] == 503 and by_path["/waiting"]["error"] == "shutting_down"
        assert by_path["/streaming"]["status"] == 200 and by_path["/streaming"]["error"] == "shutdown_timeout"
    finally:
        release.set()


def _refused(addr):
    import socket
    try:
        s = socket.create_connection(addr, timeout=1)
        s.close()
        return False
    except OSError:
        return True
