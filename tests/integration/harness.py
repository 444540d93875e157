"""Test harness: the real switchyard binary on loopback, scriptable backends, raw clients.

Every server binds port 0 and reports the port it got; nothing waits a fixed time for
readiness: the proxy is ready when it prints its "ready" line, a backend when bind() returned.
"""
import atexit
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SWITCHYARD_BIN", os.path.join(ROOT, "build", "switchyard"))
WORKERS = os.environ.get("SWITCHYARD_TEST_WORKERS", "")
# SWITCHYARD_TEST_TLS=1 reruns the request-path tests over TLS: every proxy a test starts without
# its own `listen:` listens with TLS (a certificate from a CA made for the run), and Client /
# get() speak TLS to it. Tests that must talk plain TCP to the proxy are marked `plaintext`.
TLS_MODE = os.environ.get("SWITCHYARD_TEST_TLS", "") == "1"
# SWITCHYARD_TEST_H2=1 reruns the request-path tests with get() speaking HTTP/2 to the proxy (raw
# Client / wrk / curl stay HTTP/1.1: what they test is HTTP/1.1 framing). Tests whose assertions
# are about HTTP/1.1 itself are marked `http1`.
H2_MODE = os.environ.get("SWITCHYARD_TEST_H2", "") == "1"
# The proxy listeners this pytest process started, address -> Proxy. Looked up through
# is_proxy()/is_tls_proxy(), which ask whether that proxy still runs: once it has stopped its port
# may be bound again by anything (a backend, another proxy's plain admin listener), and a stale
# entry would wrap that connection in TLS (tls_lb failed so once: WRONG_VERSION_NUMBER).
_PROXIES = {}
_TLS_RUN = None


def tls_run():
    """The run's CA and a server certificate for localhost / 127.0.0.1, as files: (ca, cert, key)."""
    global _TLS_RUN
    if _TLS_RUN is None:
        import trustme
        d = tempfile.mkdtemp(prefix="switchyard-tls-")
        atexit.register(shutil.rmtree, d, True)  # per pytest process (xdist workers make their own)
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1", "svc")
        paths = (os.path.join(d, "ca.pem"), os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
        ca.cert_pem.write_to_path(paths[0])
        leaf.cert_chain_pems[0].write_to_path(paths[1])
        leaf.private_key_pem.write_to_path(paths[2])
        _TLS_RUN = paths
    return _TLS_RUN


# Node clients the tests drive (npm registry; installed once per clone into build-npm/ by the first
# test that needs them). One list, so one install serves every test file.
NPM_DIR = os.path.join(ROOT, "build-npm")
NPM_PACKAGES = ["consul@2.0.1", "eureka-js-client@4.5.0", "@grpc/grpc-js@1.14.7"]


def node_modules():
    """The node_modules directory holding NPM_PACKAGES (for NODE_PATH); npm install once per clone,
    under a lock so parallel test processes do not race. Skips when node/npm or the registry is
    missing."""
    import pytest
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm not installed (deploy/install-deps.sh installs them)")
    os.makedirs(NPM_DIR, exist_ok=True)
    with open(os.path.join(NPM_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = os.path.join(NPM_DIR, ".installed-" + "-".join(NPM_PACKAGES).replace("/", "_"))
        if not os.path.exists(marker):
            r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", NPM_DIR] + NPM_PACKAGES,
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                pytest.skip("npm registry unreachable, node client tests skipped:\n" + r.stderr[-2000:])
            open(marker, "w").close()
    return os.path.join(NPM_DIR, "node_modules")


def tls_client_context(ca_path, cert=None, key=None):
    """A client context that verifies the chain against `ca_path` (names are not checked: tests
    reach the proxy by IP and route by Host)."""
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def is_proxy(addr):
    """Whether `addr` is the proxy listener of a proxy this process started and that still runs."""
    p = _PROXIES.get(tuple(addr))
    return p is not None and p.proc is not None and p.proc.poll() is None and tuple(p.addr) == tuple(addr)


def is_tls_proxy(addr):
    """is_proxy(addr), and that listener speaks TLS (the TLS run's default listener)."""
    return is_proxy(addr) and getattr(_PROXIES[tuple(addr)], "tls_default", False)


def base_url(p):
    """The proxy listener's URL for command-line clients (curl, wrk): https:// in the TLS run."""
    scheme = "https" if is_tls_proxy(p.addr) else "http"
    return f"{scheme}://127.0.0.1:{p.addr[1]}"


def curl_tls_args():
    """curl's flags to trust the TLS run's CA (nothing outside it)."""
    return ["--cacert", tls_run()[0]] if TLS_MODE else []


def forwarded_proto(p):
    return "https" if is_tls_proxy(p.addr) else "http"


def connect(addr, timeout=10, server_hostname=None, context=None):
    """A connection to `addr`: TLS when it is a proxy listener of the TLS run (or `context` given)."""
    sock = socket.create_connection(addr, timeout=timeout)
    if context is None and is_tls_proxy(addr):
        context = tls_client_context(tls_run()[0])
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=server_hostname)
    return sock


def free_port():
    """A port that was free a moment ago, for servers that cannot bind port 0 and report it
    (Prometheus, the example services)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout=10.0, interval=0.01, what="condition"):
    """Polls pred() until it returns a truthy value; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- HTTP parsing (client/backend)

class Message:
    def __init__(self, start, headers, body, trailers=None):
        self.start = start          # request line or status line
        self.headers = headers      # list of (name, value) as received
        self.body = body
        self.trailers = trailers or []  # a chunked body's trailer section / HTTP/2 trailing HEADERS

    def trailer(self, name, default=None):
        for k, v in self.trailers:
            if k.lower() == name.lower():
                return v
        return default

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def headers_named(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def status(self):
        return int(self.start.split(" ")[1])

    @property
    def method(self):
        return self.start.split(" ")[0]

    @property
    def target(self):
        return self.start.split(" ")[1]

    def json(self):
        return json.loads(self.body)


class Reader:
    """Buffered reader over a socket that parses HTTP/1.1 messages."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        raw = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = raw.split("\r\n")[:-2]
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip()))
        return lines[0], headers

    def read_body(self, headers, no_body=False, until_eof_ok=True):
        m = Message("", headers, b"")
        if no_body:
            return b""
        te = m.header("transfer-encoding")
        if te and te.lower() == "chunked":
            body = b""
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self.trailers = []
                    while True:
                        line = self.read_until(b"\r\n")[:-2].decode("latin-1")
                        if not line:
                            return body
                        k, _, v = line.partition(":")
                        self.trailers.append((k, v.strip()))
                body += self.read_exact(size)
                self.read_exact(2)
        cl = m.header("content-length")
        if cl is not None:
            return self.read_exact(int(cl))
        return self.read_to_eof() if until_eof_ok else b""

    def read_request(self):
        start, headers = self.read_head()
        has_body = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers)
        self.trailers = []
        body = self.read_body(headers) if has_body else b""
        return Message(start, headers, body, self.trailers)

    def read_response(self, head_request=False):
        while True:
            start, headers = self.read_head()
            status = int(start.split(" ")[1])
            if 100 <= status < 200 and status != 101:
                continue
            no_body = head_request or status in (204, 304) or status == 101
            self.trailers = []
            body = self.read_body(headers, no_body)
            return Message(start, headers, body, self.trailers)


def raise_fd_limit(n):
    """At least n file descriptors for this process and the proxies it starts (they inherit it);
    skips the test when the hard limit is lower."""
    import pytest
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < n:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {n} fds needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), hard))


def request_bytes(method="GET", path="/", host="svc", headers=None, body=b"", version="HTTP/1.1"):
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    for k, v in (headers or []):
        lines.append(f"{k}: {v}")
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in (headers or [])):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    """A raw HTTP/1.1 client on one connection."""

    def __init__(self, addr, timeout=10, context=None, server_hostname=None):
        self.sock = connect(addr, timeout, server_hostname, context)
        self.reader = Reader(self.sock)

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", host="svc", headers=None, body=b"", version="HTTP/1.1"):
        self.send(request_bytes(method, path, host, headers, body, version))
        return self.reader.read_response(head_request=(method == "HEAD"))

    def closed_by_peer(self, timeout=5):
        """True when the peer closes the connection (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()


# Headers HTTP/2 has no place for (RFC 9113 §8.2.2): get() drops them in the HTTP/2 run.
_H1_ONLY_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"}


def get(addr, path="/", host="svc", headers=None, method="GET", body=b""):
    """One request on a new connection. In the HTTP/2 run (SWITCHYARD_TEST_H2=1) a request to a
    proxy listener goes as an HTTP/2 stream (prior knowledge, or ALPN h2 in the TLS run)."""
    if H2_MODE and is_proxy(addr):
        hdrs = [(k.lower(), v) for k, v in (headers or []) if k.lower() not in _H1_ONLY_HEADERS]
        if body and not any(k == "content-length" for k, _ in hdrs):
            hdrs.append(("content-length", str(len(body))))
        c = H2Client(addr)
        try:
            return c.response(c.request(method, path, host, hdrs, body))
        finally:
            c.close()
    c = Client(addr)
    try:
        return c.request(method, path, host, headers, body)
    finally:
        c.close()


def metric(p, metric_name, **labels):
    """The sum of the series of `metric_name` on p's /metrics whose labels include every one given:
    metric(p, "switchyard_requests_total", code="200") counts both protocols. 0.0 when none is there."""
    text = admin(p.admin, "GET", "/metrics")[1]
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for m in re.finditer("^" + re.escape(metric_name) + r"(?:\{([^}]*)\})? (\S+)$", text, re.M):
        have = (m.group(1) or "").split(",")
        if all(w in have for w in want):
            total += float(m.group(2))
    return total


def admin(addr, method, path, body=None, headers=None):
    """One admin API call; returns (status, parsed JSON or text, headers)."""
    hdrs = list(headers or [])
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.append(("Content-Type", "application/json"))
        hdrs.append(("Content-Length", str(len(data))))
    elif method in ("POST", "PUT", "DELETE"):
        hdrs.append(("Content-Length", "0"))
    c = Client(addr)
    try:
        r = c.request(method, path, "admin", hdrs, data)
    finally:
        c.close()
    try:
        payload = json.loads(r.body) if r.body else None
    except ValueError:
        try:
            payload = r.body.decode()
        except UnicodeDecodeError:
            payload = r.body  # not text (a gzipped file): the bytes as they came
    return r.status, payload, r


# ---------------------------------------------------------------- backends

class TcpServer:
    """The one accept loop of every test server: a loopback listener (port 0 unless told) that runs
    serve(conn, reader) for each accepted connection in a thread of its own. `connections` counts
    accepts, `closed` the connections that ended (either side); stop() closes everything."""

    def __init__(self, serve, port=0, tls=None):
        self.serve = serve
        self.tls = tls  # an ssl.SSLContext (server side): each connection is TLS
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.connections = 0
        self.closed = 0
        self.lock = threading.Lock()
        self.open_conns = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open_conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.serve(conn, Reader(conn))
        except (EOFError, OSError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                self.closed += 1

    def stop(self):
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for c in self.open_conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass


class Backend(TcpServer):
    """A loopback HTTP backend whose behaviour is a Python function.

    handler(conn, req, backend) is called for each request; it must write the response itself
    (helpers: respond()). It returns False to close the connection. Each accepted connection
    runs in its own thread. `requests` records every request; `connections` counts accepts.
    """

    def __init__(self, handler=None, name="backend", port=0, tls=None):
        self.name = name
        self.handler = handler or self.default
        self.requests = []
        super().__init__(self._serve_http, port, tls)

    def default(self, conn, req, backend):
        respond(conn, 200, f"{self.name} {req.method} {req.target}".encode())
        return True

    stream_bodies = False  # True: requests are handed over after their head; the handler reads the body

    def _serve_http(self, conn, reader):
        while True:
            if self.stream_bodies:
                req = Message(*reader.read_head(), b"")
            else:
                req = reader.read_request()
            with self.lock:
                self.requests.append(req)
            req.reader = reader
            if self.handler(conn, req, self) is False:
                break


def respond(conn, status=200, body=b"", headers=None, reason="OK"):
    lines = [f"HTTP/1.1 {status} {reason}"]
    hdrs = list(headers or [])
    if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    for k, v in hdrs:
        lines.append(f"{k}: {v}")
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


# ---------------------------------------------------------------- the proxy

class Proxy:
    """The real binary, started on a generated config with port-0 listeners."""

    def __init__(self, config_text="", extra_args=None, tmpdir=None, config_path=None, env=None, prefix=None):
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="switchyard-test-")
        self.config_path = config_path or os.path.join(self.tmpdir, "switchyard.yaml")
        if config_path is None:
            self.write_config(config_text)
        self.extra_args = extra_args or []
        self.env = env
        self.prefix = prefix or []  # e.g. ["prlimit", "--nofile=64"]: runs the binary under it (exec'd)
        self.lines = []
        self.proc = None
        self.start()

    @staticmethod
    def with_listeners(text):
        out = text
        if not re.search(r"^listen:", text, re.M):
            if TLS_MODE:
                _, cert, key = tls_run()
                out = ("listen:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n"
                       f"        - {{ cert: {cert}, key: {key} }}\n") + out
            else:
                out = "listen: 127.0.0.1:0\n" + out
        if not re.search(r"^admin:", text, re.M):
            out = "admin:\n  listen: 127.0.0.1:0\n" + out
        # SWITCHYARD_TEST_WORKERS runs the whole suite with that many worker threads (the
        # ThreadSanitizer pass of deploy/test.sh sets it); a test's own `workers:` wins.
        if WORKERS and not re.search(r"^workers:", text, re.M):
            out = f"workers: {WORKERS}\n" + out
        return out

    def write_config(self, text):
        self.tls_default = TLS_MODE and not re.search(r"^listen:", text, re.M)
        with open(self.config_path + ".tmp", "w") as f:
            f.write(self.with_listeners(text))
        os.replace(self.config_path + ".tmp", self.config_path)

    def start(self):
        self.lines = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(self.prefix + [BIN, "-c", self.config_path] + self.extra_args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env)
        threading.Thread(target=self._pump, daemon=True).start()
        wait_until(lambda: self.ready.is_set() or self.proc.poll() is not None, 20, what="switchyard to start")
        if not self.ready.is_set():
            raise AssertionError("switchyard did not start:\n" + self.log())
        self.addr = self._addr("proxy")
        self.admin = self._addr("admin")
        if self.addr:
            _PROXIES[tuple(self.addr)] = self

    def _pump(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if " ready " in line:
                self.ready.set()

    def _addr(self, kind):
        for line in self.lines:
            m = re.search(kind + r"=(\S+):(\d+)$", line)
            if m:
                return (m.group(1), int(m.group(2)))
        return None

    def log(self):
        return "\n".join(self.lines)

    def wait_log(self, pattern, timeout=60):
        # (A bound on a hang, not a pace: polling returns as soon as the line is there, and a
        # sanitizer build on a slow machine may take seconds to log it.)
        return wait_until(lambda: any(re.search(pattern, l) for l in self.lines), timeout, what=f"log line /{pattern}/")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def rss_peak_kb(self):
        return self._status_kb("VmHWM:")

    def sanitized(self):
        """Runs under a sanitizer, whose redzones and shadow memory make RSS no measure of ours.
        (By the runtime's symbols in the executable: a runtime linked statically, as clang and
        some gcc set-ups do, shows no shared library in /proc/PID/maps.)"""
        import mmap
        with open(f"/proc/{self.proc.pid}/exe", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return any(m.find(sym) >= 0 for sym in (b"__asan_init", b"__tsan_init", b"__ubsan_handle_"))

    def rss_kb(self):
        return self._status_kb("VmRSS:")

    def _status_kb(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ---------------------------------------------------------------- HTTP/2 client (python3-h2)

class H2Client:
    """An HTTP/2 client on one connection (python3-h2): prior knowledge on a plain port, ALPN h2 on
    TLS (`context`, or the TLS run's proxy listeners). Header validation is off so tests can send
    what a hostile client would; `raw()` sends bytes as they are (hand-made frames)."""

    def __init__(self, addr, timeout=10, context=None):
        import h2.config
        import h2.connection
        sock = socket.create_connection(addr, timeout=timeout)
        if context is None and is_tls_proxy(addr):
            context = tls_client_context(tls_run()[0])
        if context is not None:
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock)
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
                                        normalize_outbound_headers=False, validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}      # id -> {"status", "headers", "body", "ended", "reset"}
        self.terminated = None  # the ConnectionTerminated event, once it came
        self.eof = False
        self.settings = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def raw(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", host="svc", headers=None, body=b"", end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "https" if hasattr(self.sock, "cipher") else "http")]
        if host is not None:
            hdrs.append((":authority", host))
        hdrs += list(headers or [])
        self.streams[sid] = {"status": None, "headers": [], "body": bytearray(), "ended": False, "reset": None, "trailers": [],
                             "interim": []}
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        self.flush()
        if body:
            self.send_body(sid, body, end)
        return sid

    def send_trailers(self, sid, fields):
        """The request's trailer section (a HEADERS frame with END_STREAM)."""
        self.conn.send_headers(sid, fields, end_stream=True)
        self.flush()

    def send_body(self, sid, body, end=True):
        """Sends as the peer's windows allow, reading (window updates) in between."""
        view = memoryview(body)
        while view:
            n = min(len(view), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n <= 0:
                self._read_once()
                if self.streams[sid]["reset"] is not None or self.terminated:
                    return
                continue
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def _read_once(self, ack=True):
        import h2.events
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise EOFError("the proxy closed the connection")
        for ev in self.conn.receive_data(data):
            st = self.streams.get(getattr(ev, "stream_id", None) or -1)
            if isinstance(ev, h2.events.ResponseReceived) and st is not None:
                st["headers"] = list(ev.headers)
                st["status"] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived) and st is not None:
                st["body"] += ev.data
                if ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.InformationalResponseReceived) and st is not None:
                st["interim"].append((int(dict(ev.headers)[":status"]), list(ev.headers)))
            elif isinstance(ev, h2.events.TrailersReceived) and st is not None:
                st["trailers"] = list(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and st is not None:
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and st is not None:
                st["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings.update({k: v.new_value for k, v in ev.changed_settings.items()})
        try:
            self.flush()
        except OSError:
            pass

    def interim(self, sid):
        """Reads until stream `sid` has an interim (1xx) response; returns them all as
        [(status, [(name, value), ...]), ...]."""
        st = self.streams[sid]
        while not st["interim"] and not st["ended"] and st["reset"] is None:
            self._read_once()
        return st["interim"]

    def response(self, sid):
        """Reads until stream `sid` ends or is reset; returns a Message (start "HTTP/2 <status>")."""
        st = self.streams[sid]
        while not st["ended"] and st["reset"] is None:
            self._read_once()
        if st["reset"] is not None and not st["ended"]:
            raise ConnectionResetError(f"stream {sid} reset with error code {st['reset']}")
        hdrs = [(k, v) for k, v in st["headers"] if not k.startswith(":")]
        return Message(f"HTTP/2 {st['status']}", hdrs, bytes(st["body"]), st["trailers"])

    def wait_closed(self, timeout=10):
        """True when the proxy ends the connection (GOAWAY and/or EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while not self.eof:
                self._read_once()
        except (EOFError, OSError):
            return True
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
