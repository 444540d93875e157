"""HTTP/2 to instances (README.md, "HTTP/2 to instances and gRPC"): `services.X.protocol: h2c`
carries gRPC end to end: every call shape, metadata and trailers both ways, application statuses
unchanged, large messages under flow control, cancellation reaching the instance, many calls
sharing few upstream connections, HTTP/1.1 clients reaching an h2c service, and the proxy's own
errors answered as gRPC statuses.

Covers: clients over HTTP/2 plaintext (prior knowledge: grpcio's insecure channel) and HTTP/1.1
(curl), to HTTP/2 plaintext (h2c) instances and, in the `protocol: h2` tests, HTTP/2 over TLS
(ALPN h2) instances; a registration's "protocol" and Consul's GRPC check. Servers and clients: Debian's python3-grpcio, with
generic handlers on raw bytes (no generated code); a second client, node's @grpc/grpc-js (npm),
in test_grpc_js_client.
"""
import json
import os
import socket
import struct
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

from conftest import service_config
from harness import TcpServer, admin, metric, node_modules, tls_run, wait_until

pytestmark = pytest.mark.plaintext

BIG = 16 * 1024 * 1024
OPTS = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]


class EchoServer:
    """A grpcio server with the test.Echo methods; records the peers (upstream connections) it saw
    and the calls that were cancelled."""

    def __init__(self, name, tls=None):
        """`tls`: (cert path, key path): the server speaks HTTP/2 over TLS (ALPN h2) only."""
        self.name = name
        self.peers = set()
        self.calls = 0
        self.sick = False  # Unary answers UNAVAILABLE (trailers-only) instead of echoing
        self.cancelled = threading.Event()
        self.lock = threading.Lock()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=OPTS)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        # grpc.health.v1.Health/Check on raw protobuf bytes: HealthCheckRequest{service = 1},
        # HealthCheckResponse{status = 1} with 1 SERVING, 2 NOT_SERVING.
        self.serving = True
        self.health_peers = set()
        self.health_asked = []
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(self.health_check)}),))
        if tls:
            with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
                creds = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def _seen(self, ctx):
        with self.lock:
            self.peers.add(ctx.peer())

    def unary(self, req, ctx):
        self._seen(ctx)
        with self.lock:
            self.calls += 1
        if self.sick:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "draining: " + self.name)
        md = dict(ctx.invocation_metadata())
        ctx.send_initial_metadata((("x-served-by", self.name),))
        ctx.set_trailing_metadata((("x-trailer", "t-" + md.get("x-probe", "")),))
        return req

    def server_stream(self, req, ctx):
        self._seen(ctx)
        n = int(req.decode())
        for i in range(n):
            yield str(i).encode()

    def client_stream(self, it, ctx):
        self._seen(ctx)
        count = total = 0
        for m in it:
            count += 1
            total += len(m)
        return f"{count} {total}".encode()

    def bidi(self, it, ctx):
        self._seen(ctx)
        for m in it:
            yield m[::-1]

    def slow(self, req, ctx):
        ctx.add_callback(self.cancelled.set)  # runs when the call ends early (cancelled)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and ctx.is_active():
            time.sleep(0.01)
        return req

    def health_check(self, req, ctx):
        service = req[2:].decode() if req[:1] == b"\x0a" else ""
        with self.lock:
            self.health_peers.add(ctx.peer())
            self.health_asked.append(service)
        if service not in ("", "test.Echo"):
            ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service " + service)
        return b"\x08\x01" if self.serving else b"\x08\x02"

    def fail(self, req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + req.decode())

    def stop(self):
        # Waits: a call that reached a server still stopping would get grpcio's own CANCELLED.
        self.server.stop(0).wait()


@pytest.fixture
def echo_servers():
    made = []

    def make(name, tls=None):
        s = EchoServer(name, tls)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def h2c_config(*servers, extra=""):
    class B:
        def __init__(self, a):
            self.address = a
    return "services:\n" + service_config("echo", [B(s.address) for s in servers], "protocol: h2c\n" + extra)


def channel(p, authority="echo"):
    # Prior knowledge HTTP/2 to the proxy; :authority "echo" routes to the service of that name.
    return grpc.insecure_channel(f"127.0.0.1:{p.addr[1]}", options=OPTS + [("grpc.default_authority", authority)])


def test_unary_metadata_trailers_and_statuses_pass_through(echo_servers, proxies):
    s = echo_servers("s0")
    p = proxies(h2c_config(s))
    with channel(p) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        resp, call = unary.with_call(b"hello", metadata=(("x-probe", "p1"),), timeout=30)
        assert resp == b"hello"
        assert ("x-served-by", "s0") in call.initial_metadata()
        assert ("x-trailer", "t-p1") in call.trailing_metadata()  # trailers relayed HTTP/2 -> HTTP/2
        assert call.code() == grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Fail")(b"x", timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "no such thing: x"
        # A 10 MB message each way, paced by the windows.
        big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
        assert unary(big, timeout=120) == big
    log = p.log()
    assert "error" not in log.lower() or "upstream_failed" not in log


def test_large_uploads_at_once_on_one_connection_all_complete(echo_servers, proxies):
    # Three 10 MB calls at once over one client connection, eight times: the proxy's writes to the
    # instance go pending (socket full) while more of each upload arrives. Bytes queued then must
    # still be written once the library had deferred that stream's body, or the upload stops with
    # the client's window held (was: DEADLINE_EXCEEDED in 1 of ~3 rounds).
    s = echo_servers("s0")
    p = proxies(h2c_config(s))
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    with channel(p) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        for _ in range(8):
            with futures.ThreadPoolExecutor(3) as ex:
                got = list(ex.map(lambda i: unary(big + bytes([i]), timeout=120), range(3)))
            assert got == [big + bytes([i]) for i in range(3)]


def test_streaming_in_every_shape(echo_servers, proxies):
    s = echo_servers("s0")
    p = proxies(h2c_config(s))
    with channel(p) as ch:
        got = [m.decode() for m in ch.unary_stream("/test.Echo/ServerStream")(b"1000", timeout=120)]
        assert got == [str(i) for i in range(1000)]
        msgs = [b"m%d" % i for i in range(1000)]
        assert ch.stream_unary("/test.Echo/ClientStream")(iter(msgs), timeout=120) == f"1000 {sum(map(len, msgs))}".encode()
        back = list(ch.stream_stream("/test.Echo/Bidi")(iter(msgs), timeout=120))
        assert back == [m[::-1] for m in msgs]


def test_client_deadline_cancels_the_instances_call(echo_servers, proxies):
    s = echo_servers("s0")
    p = proxies(h2c_config(s))
    with channel(p) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Slow")(b"z", timeout=1)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 2.9  # (not the handler's 3 s)
        # The client's RST_STREAM went on to the instance as a reset of its stream.
        assert s.cancelled.wait(30)
        # The connection is fine for the next call.
        assert ch.unary_unary("/test.Echo/Unary")(b"after", timeout=30) == b"after"


def test_many_concurrent_calls_share_few_connections(echo_servers, proxies):
    a, b = echo_servers("a"), echo_servers("b")
    p = proxies(h2c_config(a, b, extra="lb: round_robin"))
    with channel(p) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        pool = futures.ThreadPoolExecutor(max_workers=50)
        calls = [pool.submit(lambda i=i: unary.with_call(b"c%d" % i, timeout=120)) for i in range(200)]
        served = {"a": 0, "b": 0}
        for i, f in enumerate(calls):
            resp, call = f.result()
            assert resp == b"c%d" % i
            served[dict(call.initial_metadata())["x-served-by"]] += 1
        pool.shutdown()
    assert served["a"] > 0 and served["b"] > 0
    # HTTP/2 upstream connections are shared: at most two per instance (workers: 1).
    assert 1 <= len(a.peers) <= 2 and 1 <= len(b.peers) <= 2, (a.peers, b.peers)


def grpc_frame(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def test_http11_client_reaches_an_h2c_service(echo_servers, proxies, tmp_path):
    s = echo_servers("s0")
    p = proxies(h2c_config(s))
    body = tmp_path / "req.bin"
    body.write_bytes(grpc_frame(b"from http/1.1"))
    out = subprocess.run(["curl", "-s", "--http1.1", "-H", "Host: echo", "-H", "content-type: application/grpc", "-H", "te: trailers",
                          "--data-binary", f"@{body}", "-o", str(tmp_path / "resp.bin"), "-w", "%{http_version} %{http_code}",
                          f"http://127.0.0.1:{p.addr[1]}/test.Echo/Unary"], capture_output=True, text=True, timeout=60)
    assert out.stdout == "1.1 200", out
    assert (tmp_path / "resp.bin").read_bytes() == grpc_frame(b"from http/1.1")


def test_instance_gone_mid_call_and_no_instance(echo_servers, proxies):
    s = echo_servers("s0")
    p = proxies(h2c_config(s, extra="timeouts: { connect: 2s }"))
    with channel(p) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(b"1", timeout=30) == b"1"
        s.stop()  # its connection closes under the proxy
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Unary")(b"2", timeout=30)
        # The proxy's own 502 (upstream_failed) as a gRPC error: UNAVAILABLE, the client may retry.
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    wait_until(lambda: p.proc.poll() is None, 1, what="proxy alive")


def test_goaway_from_an_instance_under_load_fails_no_call(echo_servers, proxies):
    a, b = echo_servers("a"), echo_servers("b")
    p = proxies(h2c_config(a, b, extra="lb: round_robin\nretry: { attempts: 3 }"))
    failures, done = [], []
    stop = threading.Event()

    def caller(k):
        with channel(p) as ch:
            unary = ch.unary_unary("/test.Echo/Unary")
            i = 0
            while not stop.is_set():
                try:
                    assert unary(b"%d-%d" % (k, i), timeout=60) == b"%d-%d" % (k, i)
                    done.append(1)
                except grpc.RpcError as e:
                    failures.append(e)
                i += 1

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(done) >= 200, 60, what="calls flowing")
    # a goes away gracefully: GOAWAY on its connections, in-flight calls finish, it stops listening.
    a.server.stop(grace=5).wait()
    seen = len(done)
    wait_until(lambda: len(done) >= seen + 200, 60, what="calls flowing to b alone")
    stop.set()
    for t in threads:
        t.join(60)
    # Nothing the proxy did failed a call. grpcio's own server cancels calls that reached it just
    # as stop() began but were not yet handed to the application, either with trailers-only
    # CANCELLED (an application status, relayed unchanged) or by resetting the stream (a reset of
    # a non-idempotent request, not retried: the proxy's UNAVAILABLE naming the reset). At most one
    # per caller in flight; anything else would be the proxy's own failure.
    def from_the_instances_shutdown(e):
        return e.code() == grpc.StatusCode.CANCELLED or (
            e.code() == grpc.StatusCode.UNAVAILABLE and ": reset" in (e.details() or ""))
    assert all(from_the_instances_shutdown(e) or ": reset" in e.debug_error_string() for e in failures), failures
    assert len(failures) <= len(threads), failures


def test_the_proxys_own_errors_are_grpc_statuses(echo_servers, proxies, tmp_path):
    """No route -> UNIMPLEMENTED, timeout -> DEADLINE_EXCEEDED, rate limited -> RESOURCE_EXHAUSTED,
    no reachable instance -> UNAVAILABLE: HTTP 200 and trailers-only over HTTP/2, the status in the
    head over HTTP/1.1 (curl)."""
    s = echo_servers("s0")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    text = ("rate_limits:\n  one: { rate: 1/h, burst: 1, key: none }\n" + h2c_config(s, extra="timeouts: { response: 1s }")
            + "  limited:\n    protocol: h2c\n    rate_limit: one\n    instances: [ { address: " + s.address + " } ]\n"
            + "  dead:\n    protocol: h2c\n    instances: [ { address: " + dead + " } ]\n")
    p = proxies(text)
    try:
        def code_of(authority, method="/test.Echo/Unary"):
            with channel(p, authority) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    ch.unary_unary(method)(b"x", timeout=60)
                return e.value.code(), e.value.details()

        assert code_of("nosuch")[0] == grpc.StatusCode.UNIMPLEMENTED
        t0 = time.monotonic()
        code, details = code_of("echo", "/test.Echo/Slow")  # a 3 s handler, timeouts.response 1s
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "timeout" in details, details
        assert time.monotonic() - t0 < 2.9
        assert code_of("dead")[0] == grpc.StatusCode.UNAVAILABLE
        with channel(p, "limited") as ch:
            assert ch.unary_unary("/test.Echo/Unary")(b"first", timeout=60) == b"first"  # the burst
        assert code_of("limited")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        # An HTTP/1.1 gRPC request: 200, the status in the head, no body.
        out = subprocess.run(["curl", "-s", "--http1.1", "-D", "-", "-o", "/dev/null", "-H", "Host: nosuch",
                              "-H", "content-type: application/grpc", "--data-binary", "x",
                              f"http://127.0.0.1:{p.addr[1]}/test.Echo/Unary"], capture_output=True, text=True, timeout=60)
        head = out.stdout.lower()
        assert head.startswith("http/1.1 200") and "grpc-status: 12\n" in head and "content-length: 0" in head, out
        # A non-gRPC request on the same route still gets the JSON error.
        out = subprocess.run(["curl", "-s", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nosuch",
                              f"http://127.0.0.1:{p.addr[1]}/"], capture_output=True, text=True, timeout=60)
        assert out.stdout == "404", out
    finally:
        closed.close()


def test_retry_on_unavailable_moves_the_call_to_another_instance(echo_servers, proxies):
    """retry.on names `unavailable`: a trailers-only UNAVAILABLE from one instance sends the call
    (a POST, its message replayed) to another; a service whose retry.on does not name it relays the
    status unchanged. Outlier detection counts UNAVAILABLE as the instance failing."""
    sick, well = echo_servers("sick"), echo_servers("well")
    sick.sick = True
    text = h2c_config(sick, well, extra="lb: round_robin\nretry: { attempts: 2, on: [unavailable, connect-failure] }\n"
                      "outlier_detection: { consecutive_failures: 3, base_ejection_time: 10m }")
    text += "  plain:\n    protocol: h2c\n    instances: [ { address: " + sick.address + " } ]\n"
    p = proxies(text)
    with channel(p) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        for i in range(10):
            resp, call = unary.with_call(b"m%d" % i * 1000, timeout=60)
            assert resp == b"m%d" % i * 1000  # the replayed message arrived whole
            assert ("x-served-by", "well") in call.initial_metadata()
    assert sick.calls >= 1  # round robin sent calls there first; each was retried on `well`
    assert metric(p, "switchyard_retries_total", service="echo") >= sick.calls
    # Three UNAVAILABLE in a row: ejected, by its gRPC status.
    p.wait_log("outlier ejected: echo/")
    assert "last: grpc-status 14" in p.log()
    with channel(p, "plain") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Unary")(b"x", timeout=60)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and e.value.details() == "draining: sick"
    assert metric(p, "switchyard_grpc_responses_total", service="plain", grpc_status="14") == 1
    assert metric(p, "switchyard_grpc_responses_total", service="echo", grpc_status="0") == 10


def test_application_statuses_do_not_count_against_the_instance(echo_servers, proxies, tmp_path):
    """NOT_FOUND in the trailers (after a response head) or trailers-only is the application's
    answer: no ejection however many; the access log names the method and the status."""
    s = echo_servers("s0")
    log = tmp_path / "access.log"
    p = proxies(f"access_log: {log}\n" + h2c_config(s, extra="outlier_detection: { consecutive_failures: 2 }\n"
                                                       "circuit_breaker: { failure_threshold: 2 }"))
    with channel(p) as ch:
        for _ in range(6):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Fail")(b"x", timeout=60)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert ch.unary_unary("/test.Echo/Unary")(b"ok", timeout=60) == b"ok"
    assert metric(p, "switchyard_grpc_responses_total", service="echo", grpc_status="5") == 6
    assert "outlier ejected" not in p.log() and "circuit breaker open" not in p.log()
    import json
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 7, 30, what="access log lines")
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    fails = [r for r in recs if r["path"] == "/test.Echo/Fail"]
    assert len(fails) == 6 and all(r["grpc_method"] == "/test.Echo/Fail" and r["grpc_status"] == 5 for r in fails), fails
    assert [r["grpc_status"] for r in recs if r["path"] == "/test.Echo/Unary"] == [0]


@pytest.mark.parametrize("http", ["--http1.1", "--http2-prior-knowledge"])
def test_grpc_timeout_bounds_the_try(backends, proxies, tmp_path, http):
    """A call's grpc-timeout (300 ms, against timeouts.response 30s) ends the try: DEADLINE_EXCEEDED
    from the proxy, the instance's request abandoned (its connection closed), the instance not
    blamed (consecutive_failures: 1 would eject it) and no retry (the deadline is gone). Clients
    over HTTP/1.1 and HTTP/2 (curl, which keeps no deadline of its own); the instance is an
    HTTP/1.1 backend that never answers (a grpcio server would enforce the same deadline itself and
    race the proxy to it)."""
    abandoned = threading.Event()

    def never_answers(conn, req, b):
        while conn.recv(65536):
            pass
        abandoned.set()  # the proxy gave the request up
        return False

    b = backends(never_answers)
    p = proxies("services:\n" + service_config("echo", [b], "outlier_detection: { consecutive_failures: 1 }\n"
                                                 "retry: { on: [timeout, unavailable, reset] }"))
    body = tmp_path / "req.bin"
    body.write_bytes(grpc_frame(b"slow"))
    for _ in range(2):
        out = subprocess.run(["curl", "-s", http, "-D", "-", "-o", "/dev/null", "-H", "Host: echo", "-H", "content-type: application/grpc",
                              "-H", "te: trailers", "-H", "grpc-timeout: 300m", "--data-binary", f"@{body}",
                              f"http://127.0.0.1:{p.addr[1]}/test.Echo/Slow"], capture_output=True, text=True, timeout=60)
        head = out.stdout.lower()
        assert " 200" in head.splitlines()[0] and "grpc-status: 4\n" in head, out
        assert "grpc-timeout of 300 ms ran out" in head, out  # grpc-message
    assert abandoned.wait(30)
    assert len(b.requests) == 2  # one try each: no time was left for another
    assert "outlier ejected" not in p.log()
    assert metric(p, "switchyard_grpc_responses_total", service="echo", grpc_status="4") == 2


def test_grpc_health_checks_take_a_not_serving_instance_out_and_back(echo_servers, proxies):
    """health_check.type: grpc calls grpc.health.v1.Health/Check with grpc_service over h2c: SERVING
    is healthy, NOT_SERVING (or an error status) takes the instance out with the reason in its
    `why`, and it comes back when SERVING again; probes share one kept connection per instance."""
    a, b = echo_servers("a"), echo_servers("b")
    hc = ("health_check: { type: grpc, grpc_service: test.Echo, interval: 1s, timeout: 900ms, healthy_threshold: 1, "
          "unhealthy_threshold: 1, jitter: 0% }")
    text = h2c_config(a, b, extra="lb: round_robin\n" + hc)
    text += ("  other:\n    protocol: h2c\n    instances: [ { address: " + a.address + " } ]\n"
             "    health_check: { type: grpc, grpc_service: nosuch, interval: 1s, timeout: 900ms, unhealthy_threshold: 1 }\n")
    p = proxies(text)

    def inst(service, server):
        for i in admin(p.admin, "GET", f"/v1/services/{service}")[1]["instances"]:
            if i["address"] == server.address:
                return admin(p.admin, "GET", f"/v1/services/{service}/instances/{i['id']}")[1]
        raise AssertionError(f"{server.address} not in {service}")

    wait_until(lambda: inst("echo", a)["state"] == "healthy" and inst("echo", b)["state"] == "healthy", 60, what="both healthy")
    assert "gRPC SERVING" in inst("echo", a)["why"]
    assert "test.Echo" in a.health_asked
    a.serving = False
    wait_until(lambda: inst("echo", a)["state"] == "unhealthy", 60, what="a out")
    assert "NOT_SERVING" in inst("echo", a)["why"]
    with channel(p) as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        for i in range(6):
            _, call = unary.with_call(b"x", timeout=60)
            assert ("x-served-by", "b") in call.initial_metadata()
    a.serving = True
    wait_until(lambda: inst("echo", a)["state"] == "healthy", 60, what="a back")
    # A grpc_service the server does not know: NOT_FOUND is a failed check, said in the why.
    wait_until(lambda: inst("other", a)["state"] == "unhealthy", 60, what="other unhealthy")
    assert "grpc-status 5" in inst("other", a)["why"] and "unknown service nosuch" in inst("other", a)["why"]
    # Probes every second for seconds, over one kept connection per service probing it (two for a).
    wait_until(lambda: len(b.health_asked) >= 4, 60, what="four probes of b")
    assert len(b.health_peers) == 1, b.health_peers
    assert len(a.health_peers) <= 2, a.health_peers


def inst_view(p, service, server):
    for i in admin(p.admin, "GET", f"/v1/services/{service}")[1]["instances"]:
        if i["address"] == server.address:
            return admin(p.admin, "GET", f"/v1/services/{service}/instances/{i['id']}")[1]
    raise AssertionError(f"{server.address} not in {service}")


def tls_server_without_h2(cert, key, alpn):
    """A TLS server (harness.TcpServer) that does not speak HTTP/2: it selects http/1.1 by ALPN (or
    none at all). `handshakes` lists the handshakes it completed."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    handshakes = []

    def serve(conn, reader):
        handshakes.append(conn.selected_alpn_protocol())
        conn.settimeout(5)
        conn.recv(1)

    srv = TcpServer(serve, tls=ctx)
    srv.handshakes = handshakes
    return srv


def test_h2_over_tls_to_instances_with_grpc_health_checks(echo_servers, proxies):
    """protocol: h2 reaches gRPC servers over TLS (verified against services.X.tls.ca, SNI =
    server_name), ALPN h2: every call shape, trailers, many calls over at most two upstream
    connections, gRPC health checks over the same TLS. An instance that does not select h2 by ALPN
    is a TLS failure (502 / UNAVAILABLE, reason alpn_mismatch), never HTTP/1.1 spoken as HTTP/2."""
    ca, cert, key = tls_run()
    a, b = echo_servers("a", (cert, key)), echo_servers("b", (cert, key))
    plain11 = tls_server_without_h2(cert, key, ["http/1.1"])
    no_alpn = tls_server_without_h2(cert, key, None)
    try:
        hc = ("health_check: { type: grpc, grpc_service: test.Echo, interval: 1s, timeout: 900ms, healthy_threshold: 1, "
              "unhealthy_threshold: 1, jitter: 0% }")
        text = ("workers: 2\nservices:\n" + service_config("echo", [a, b], "protocol: h2\nlb: round_robin\n"
                                                 f"tls: {{ ca: {ca}, server_name: localhost }}\n" + hc)
                + service_config("h1only", [plain11], f"protocol: h2\ntls: {{ ca: {ca}, server_name: localhost }}\n")
                + service_config("noalpn", [no_alpn], f"protocol: h2\ntls: {{ ca: {ca}, server_name: localhost }}\n"))
        p = proxies(text)
        wait_until(lambda: inst_view(p, "echo", a)["state"] == "healthy" and inst_view(p, "echo", b)["state"] == "healthy",
                   60, what="both healthy over h2")
        assert "gRPC SERVING" in inst_view(p, "echo", a)["why"]
        with channel(p) as ch:
            unary = ch.unary_unary("/test.Echo/Unary")
            served = set()
            for i in range(6):
                resp, call = unary.with_call(b"tls-%d" % i, metadata=(("x-probe", str(i)),), timeout=60)
                assert resp == b"tls-%d" % i
                assert ("x-trailer", "t-%d" % i) in call.trailing_metadata()
                served |= {v for k, v in call.initial_metadata() if k == "x-served-by"}
            assert served == {"a", "b"}
            assert list(ch.unary_stream("/test.Echo/ServerStream")(b"500", timeout=60)) == [str(i).encode() for i in range(500)]
            bidi = ch.stream_stream("/test.Echo/Bidi")
            msgs = [b"m%04d" % i for i in range(300)]
            assert list(bidi(iter(msgs), timeout=120)) == [m[::-1] for m in msgs]
            big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
            assert unary(big, timeout=120) == big
            # 100 calls at once: streams on shared connections, not a connection each.
            with futures.ThreadPoolExecutor(max_workers=100) as ex:
                results = list(ex.map(lambda i: unary(b"c%d" % i, timeout=120), range(100)))
            assert results == [b"c%d" % i for i in range(100)]
        # At most two connections per worker and instance (the health checker's is its own).
        assert len(a.peers) <= 4 and len(b.peers) <= 4, (a.peers, b.peers)
        for service, label in (("h1only", "h1only"), ("noalpn", "noalpn")):
            with channel(p, service) as ch:
                with pytest.raises(grpc.RpcError) as e:
                    ch.unary_unary("/test.Echo/Unary")(b"x", timeout=60)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
            assert "did not select HTTP/2 by ALPN" in e.value.details(), e.value.details()
            assert metric(p, "switchyard_upstream_tls_failures_total", service=label, reason="alpn_mismatch") >= 1
        assert len(plain11.handshakes) >= 1 and len(no_alpn.handshakes) >= 1
    finally:
        plain11.stop()
        no_alpn.stop()


def test_a_registrations_protocol_and_a_consul_grpc_check(echo_servers, proxies):
    """A registration's "protocol" decides for its instance ("h2c" in an http1 service, "h2" with
    TLS); a Consul registration with a GRPC check is probed with grpc.health.v1 and routed over
    h2c, and goes out of rotation when it stops SERVING."""
    ca, cert, key = tls_run()
    plain, secure, consul = echo_servers("plain"), echo_servers("secure", (cert, key)), echo_servers("consul")
    p = proxies(f"services:\n  mixed:\n    tls: {{ enabled: false, ca: {ca}, server_name: localhost }}\n")
    st, body, _ = admin(p.admin, "PUT", "/v1/services/mixed/instances/p1", {"address": plain.address, "protocol": "h2c", "ttl": "0s"})
    assert st in (200, 201), body
    st, body, _ = admin(p.admin, "PUT", "/v1/services/mixed/instances/s1", {"address": secure.address, "protocol": "h2", "ttl": "0s"})
    assert st in (200, 201), body
    view = admin(p.admin, "GET", "/v1/services/mixed/instances/s1")[1]
    assert view["protocol"] == "h2" and view["scheme"] == "https", view
    st, body, _ = admin(p.admin, "PUT", "/v1/services/mixed/instances/x", {"address": plain.address, "protocol": "h2c", "scheme": "https"})
    assert st == 400 and body["message"].startswith("'protocol' \"h2c\""), body
    with channel(p, "mixed") as ch:
        served = set()
        for i in range(8):
            _, call = ch.unary_unary("/test.Echo/Unary").with_call(b"r", timeout=60)
            served |= {v for k, v in call.initial_metadata() if k == "x-served-by"}
        assert served == {"plain", "secure"}
    # Consul: a GRPC check (no GRPCUseTLS): h2c, probed with grpc_service test.Echo.
    reg = {"Name": "greeter", "ID": "g1", "Address": "127.0.0.1", "Port": consul.port,
           "Check": {"GRPC": f"127.0.0.1:{consul.port}/test.Echo", "Interval": "1s", "Timeout": "900ms"}}
    st, body, _ = admin(p.admin, "PUT", "/v1/agent/service/register", reg)
    assert st == 200, body
    wait_until(lambda: "test.Echo" in consul.health_asked, 60, what="a gRPC probe of the Consul instance")
    wait_until(lambda: inst_view(p, "greeter", consul)["state"] == "healthy", 60, what="greeter healthy")
    with channel(p, "greeter") as ch:
        _, call = ch.unary_unary("/test.Echo/Unary").with_call(b"hi", timeout=60)
        assert ("x-served-by", "consul") in call.initial_metadata()
    checks = admin(p.admin, "GET", "/v1/health/checks/greeter")[1]
    assert checks and checks[0]["Type"] == "grpc", checks
    consul.serving = False
    wait_until(lambda: inst_view(p, "greeter", consul)["state"] == "unhealthy", 60, what="greeter out")
    assert "NOT_SERVING" in inst_view(p, "greeter", consul)["why"]


def test_grpc_js_client(echo_servers, proxies):
    """node's @grpc/grpc-js as the client (a second gRPC implementation, with its own framing,
    flow control and deadline handling): unary with metadata and trailers, an application status,
    every streaming shape with 1,000 messages, a 10 MB message, a 1 s deadline against a 3 s
    handler, 200 concurrent calls on one channel over two instances, no route. Client: HTTP/2
    plaintext (prior knowledge); instances: h2c."""
    modules = node_modules()
    a, b = echo_servers("a"), echo_servers("b")
    p = proxies(h2c_config(a, b, extra="lb: round_robin"))
    r = subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat", "grpc_node.js"),
                        f"127.0.0.1:{p.addr[1]}", "echo"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, NODE_PATH=modules))
    steps = {}
    for line in r.stdout.splitlines():
        e = json.loads(line)
        steps[e["step"]] = e["data"]
    assert r.returncode == 0 and "error" not in steps, r.stdout + r.stderr
    u = steps["unary"]
    assert u["code"] == "OK" and u["resp"] == "hello from node", u
    assert u["head"]["x-served-by"] in ("a", "b") and u["trailers"]["x-trailer"] == "t-node", u
    assert steps["fail"] == {"code": "NOT_FOUND", "details": "no such thing: x"}
    assert steps["server_stream"] == {"count": 1000, "ordered": True}
    assert steps["client_stream"]["resp"] == f"1000 {steps['client_stream']['bytes']}"
    assert steps["bidi"] == {"count": 1000, "reversed": True}
    assert steps["big"] == {"code": "OK", "equal": True}
    assert steps["deadline"]["code"] == "DEADLINE_EXCEEDED"
    assert steps["deadline"]["ms"] < 2900, steps["deadline"]  # the client's 1 s, not the handler's 3 s
    # The client's cancellation reached the instance that ran the handler.
    wait_until(lambda: a.cancelled.is_set() or b.cancelled.is_set(), 30, what="the Slow handler cancelled")
    c = steps["concurrent"]
    assert c["ok"] == 200 and c["servedBy"].get("a", 0) > 0 and c["servedBy"].get("b", 0) > 0, c
    assert steps["no_route"] == {"code": "UNIMPLEMENTED"}
    # Few upstream connections for all of it (workers: 1 unless the run sets more: ≤ 2 per worker).
    assert 1 <= len(a.peers) <= 4 and 1 <= len(b.peers) <= 4, (a.peers, b.peers)
