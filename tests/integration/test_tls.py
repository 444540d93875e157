"""TLS on listeners, to instances and on the admin port (README.md, "TLS").

Covers: HTTP/1.1 over TLS (and plain HTTP sent to a TLS port). Certificates are made at test time
with python3-trustme (a CA per test) and the `openssl` CLI; clients are Python's ssl module,
`openssl s_client` and curl.
"""
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading

import pytest
import trustme

from conftest import service_config
from harness import Backend, Client, admin, free_port, metric, raise_fd_limit, respond, tls_client_context, wait_until


class Pki:
    """A CA and certificates written under `d`."""

    def __init__(self, d):
        self.d = str(d)
        os.makedirs(self.d, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_path = self.path("ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_path)

    def path(self, name):
        return os.path.join(self.d, name)

    def issue_with_uri(self, name, dns, uri):
        """A client certificate with a DNS and a URI SAN (trustme makes no URI SANs): openssl CLI."""
        ca_key = self.path("ca.key")
        self.ca.private_key_pem.write_to_path(ca_key)
        cert, key, csr, ext = (self.path(name + x) for x in (".crt", ".key", ".csr", ".ext"))
        with open(ext, "w") as f:
            f.write(f"subjectAltName=DNS:{dns},URI:{uri}\nextendedKeyUsage=clientAuth\n")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", csr, "-subj", f"/O=Example, Inc./CN={dns}"], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_path, "-CAkey", ca_key, "-CAcreateserial",
                        "-out", cert, "-days", "30", "-extfile", ext], check=True, capture_output=True)
        return cert, key

    def issue(self, name, *hosts, **kw):
        """Writes name.crt / name.key for `hosts`; returns (cert, key)."""
        leaf = self.ca.issue_cert(*hosts, **kw)
        cert, key = self.path(name + ".crt"), self.path(name + ".key")
        with open(cert + ".tmp", "wb") as f:
            for pem in leaf.cert_chain_pems:
                f.write(pem.bytes())
        os.replace(cert + ".tmp", cert)
        leaf.private_key_pem.write_to_path(key)
        return cert, key


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)


def tls_listen(certs, extra=""):
    lines = ["listen:", "  - address: 127.0.0.1:0", "    tls:", "      certificates:"]
    for c, k in certs:
        lines.append(f"        - {{ cert: {c}, key: {k} }}")
    lines.extend("      " + l for l in extra.strip("\n").split("\n") if l)
    return "\n".join(lines) + "\n"


def handshake(addr, ca, sni=None, cert=None, key=None, version=None, session=None, ctx=None):
    """A TLS connection to addr; returns the SSLSocket (caller closes)."""
    ctx = ctx or tls_client_context(ca, cert, key)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    s = socket.create_connection(addr, timeout=10)
    return ctx.wrap_socket(s, server_hostname=sni, session=session)


def peer_names(sock):
    der = sock.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-ext", "subjectAltName"], input=der,
                         capture_output=True, check=True).stdout.decode()
    return set(re.findall(r"DNS:([^,\s]+)", out))


def echo_headers(conn, req, backend):
    body = "\n".join(f"{k}: {v}" for k, v in req.headers).encode()
    respond(conn, 200, body)
    return True


# ---------------------------------------------------------------- listeners

def test_sni_picks_the_certificate_default_is_the_first_and_strict_refuses(pki, backends, proxies):
    b = backends(echo_headers, name="web")
    shop = pki.issue("shop", "shop.example")
    api = pki.issue("api", "*.api.example")
    svc = "services:\n" + service_config("svc", [b])
    p = proxies(tls_listen([shop, api]) + svc)
    with handshake(p.addr, pki.ca_path, "orders.api.example") as s:
        assert peer_names(s) == {"*.api.example"}
    with handshake(p.addr, pki.ca_path, "shop.example") as s:
        assert peer_names(s) == {"shop.example"}
    # Unknown or absent SNI: the first certificate.
    for sni in ("nothing.example", None):
        with handshake(p.addr, pki.ca_path, sni) as s:
            assert peer_names(s) == {"shop.example"}
    strict = proxies(tls_listen([shop, api], "strict_sni: true") + svc)
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
        handshake(strict.addr, pki.ca_path, "nothing.example")
    with handshake(strict.addr, pki.ca_path, "a.api.example") as s:
        assert peer_names(s) == {"*.api.example"}
    assert metric(strict, "switchyard_tls_handshakes_total", result="failed") >= 1


def test_requests_over_tls_carry_forwarded_proto_https_and_log_tls_fields(pki, backends, proxies, tmp_path):
    b = backends(echo_headers, name="web")
    log = tmp_path / "access.log"
    p = proxies(tls_listen([pki.issue("shop", "shop.example")]) + f"access_log: {log}\n" + "services:\n" + service_config("svc", [b]))
    c = Client(p.addr, context=tls_client_context(pki.ca_path), server_hostname="shop.example")
    try:
        # The client's own claim is replaced: this hop was TLS.
        r = c.request("GET", "/x", "svc", [("X-Forwarded-Proto", "http"), ("X-Forwarded-Client-Cert", "Hash=forged")])
        assert r.status == 200, r.body
        lines = r.body.decode().split("\n")
        assert "X-Forwarded-Proto: https" in lines
        assert not any(l.lower().startswith("x-forwarded-client-cert") for l in lines)
        r = c.request("GET", "/y", "svc")  # keep-alive over the same TLS connection
        assert r.status == 200
    finally:
        c.close()
    wait_until(lambda: log.exists() and log.read_text().count("\n") >= 2, what="access log lines")
    first = log.read_text().splitlines()[0]
    assert '"tls_version":"TLSv1.3"' in first and '"tls_sni":"shop.example"' in first and '"alpn":""' in first
    assert metric(p, "switchyard_tls_handshakes_total", result="ok", version="TLSv1.3") == 1
    assert metric(p, "switchyard_tls_certificate_expiry_timestamp_seconds", name="shop.example") > 1.7e9


def test_curl_and_alpn_http11(pki, backends, proxies):
    b = backends(name="web")
    p = proxies(tls_listen([pki.issue("shop", "shop.example")]) + "services:\n" + service_config("svc", [b]))
    out = subprocess.run(["curl", "-sS", "--cacert", pki.ca_path, "--resolve", f"shop.example:{p.addr[1]}:127.0.0.1",
                          "-H", "Host: svc", "-w", "\n%{http_version}", f"https://shop.example:{p.addr[1]}/hi"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.decode().rsplit("\n", 1)
    assert body == "web GET /hi" and version == "2"  # ALPN offers h2 first (test_http2.py)
    out = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", pki.ca_path, "--resolve", f"shop.example:{p.addr[1]}:127.0.0.1",
                          "-H", "Host: svc", "-w", "\n%{http_version}", f"https://shop.example:{p.addr[1]}/hi"],
                         capture_output=True, timeout=30)
    assert out.stdout.decode().rsplit("\n", 1) == ["web GET /hi", "1.1"], out
    with handshake(p.addr, pki.ca_path, "shop.example") as s:
        pass
    ctx = tls_client_context(pki.ca_path)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with ctx.wrap_socket(socket.create_connection(p.addr, timeout=10), server_hostname="shop.example") as s:
        assert s.selected_alpn_protocol() == "h2"
    # alpn: [http/1.1] offers only that.
    p2 = proxies(tls_listen([pki.issue("shop2", "shop.example")], "alpn: [http/1.1]") + "services:\n" + service_config("svc", [b]))
    with ctx.wrap_socket(socket.create_connection(p2.addr, timeout=10), server_hostname="shop.example") as s:
        assert s.selected_alpn_protocol() == "http/1.1"


def test_old_versions_are_refused_and_plain_http_gets_400(pki, backends, proxies):
    b = backends(name="web")
    p = proxies(tls_listen([pki.issue("shop", "shop.example")]) + "services:\n" + service_config("svc", [b]))
    for flag in ("-tls1", "-tls1_1"):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{p.addr[1]}", flag, "-CAfile", pki.ca_path],
                             input=b"", capture_output=True, timeout=30)
        assert out.returncode != 0
        assert b"Cipher is (NONE)" in out.stdout or b"alert" in out.stderr, out.stdout + out.stderr
    with handshake(p.addr, pki.ca_path, version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.version() == "TLSv1.2"
    # Plain HTTP to the TLS port: a plain-text 400, then the close.
    s = socket.create_connection(p.addr, timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"speaks TLS" in data
    assert b.connections == 0  # none of it reached the backend


@pytest.mark.parametrize("version", ["tls1_2", "tls1_3"])
def test_session_resumption_with_s_client(pki, backends, proxies, tmp_path, version):
    b = backends(name="web")
    p = proxies(tls_listen([pki.issue("shop", "shop.example")]) + "services:\n" + service_config("svc", [b]))
    sess = str(tmp_path / f"{version}.sess")
    req = b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"

    def run(*args):
        # A request and its answer: by then TLS 1.3's tickets have arrived (s_client saves them).
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{p.addr[1]}", "-servername", "shop.example",
                              f"-{version}", "-CAfile", pki.ca_path, "-ign_eof", *args], input=req, capture_output=True, timeout=30)
        return out.stdout.decode("latin-1")

    first = run("-sess_out", sess)
    assert "New, TLSv1" in first and "HTTP/1.1 200" in first, first
    second = run("-sess_in", sess)
    assert "Reused, TLSv1" in second and "HTTP/1.1 200" in second, second
    label = "TLSv1.3" if version == "tls1_3" else "TLSv1.2"
    assert metric(p, "switchyard_tls_handshakes_total", result="resumed", version=label) == 1


def test_session_tickets_off_still_resume_through_the_cache(pki, backends, proxies):
    b = backends(name="web")
    p = proxies(tls_listen([pki.issue("shop", "shop.example")], "session_tickets: false") + "services:\n" + service_config("svc", [b]))
    ctx = tls_client_context(pki.ca_path)
    s = handshake(p.addr, pki.ca_path, "shop.example", version=ssl.TLSVersion.TLSv1_2, ctx=ctx)
    s.sendall(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
    s.recv(4096)
    session = s.session
    s.close()
    with handshake(p.addr, pki.ca_path, "shop.example", version=ssl.TLSVersion.TLSv1_2, session=session, ctx=ctx) as again:
        assert again.session_reused


def test_certificate_replaced_on_disk_both_ways_while_a_connection_stays(pki, backends, proxies):
    b = backends(name="web")
    cert, key = pki.issue("shop", "shop.example")
    p = proxies(tls_listen([(cert, key)]) + "services:\n" + service_config("svc", [b]))
    keep = Client(p.addr, context=tls_client_context(pki.ca_path), server_hostname="shop.example")
    assert keep.request("GET", "/", "svc").status == 200

    def names():
        with handshake(p.addr, pki.ca_path, "x") as s:
            return peer_names(s)

    assert names() == {"shop.example"}
    # 1. Renamed into place (certbot, Kubernetes secrets): new files, then rename over the old.
    leaf = pki.ca.issue_cert("renamed.example")
    with open(cert + ".new", "wb") as f:
        f.write(leaf.cert_chain_pems[0].bytes())
    leaf.private_key_pem.write_to_path(key + ".new")
    os.replace(key + ".new", key)
    os.replace(cert + ".new", cert)
    wait_until(lambda: names() == {"renamed.example"}, 30, what="the renamed certificate to be served")
    # 2. Edited in place (truncate and write).
    leaf = pki.ca.issue_cert("edited.example")
    with open(key, "wb") as f:
        f.write(leaf.private_key_pem.bytes())
    with open(cert, "wb") as f:
        f.write(leaf.cert_chain_pems[0].bytes())
    wait_until(lambda: names() == {"edited.example"}, 30, what="the edited certificate to be served")
    # The connection made before both changes was never touched.
    assert keep.request("GET", "/", "svc").status == 200
    keep.close()
    assert metric(p, "switchyard_tls_reload_failures_total") == 0


def test_a_broken_certificate_keeps_the_old_one_and_is_counted(pki, backends, proxies):
    b = backends(name="web")
    cert, key = pki.issue("shop", "shop.example")
    p = proxies(tls_listen([(cert, key)]) + "services:\n" + service_config("svc", [b]))
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    wait_until(lambda: metric(p, "switchyard_tls_reload_failures_total") >= 1, 30, what="the failed reload to be counted")
    p.wait_log(re.escape(cert))
    with handshake(p.addr, pki.ca_path, "shop.example") as s:
        assert peer_names(s) == {"shop.example"}
    # A reload (SIGHUP) with the broken file is refused the same way; the old certificate stays.
    st, body, _ = admin(p.admin, "POST", "/v1/reload")
    assert st == 400 and cert in str(body), body
    with handshake(p.addr, pki.ca_path, "shop.example") as s:
        assert peer_names(s) == {"shop.example"}


def test_client_certificates_required_and_optional_with_xfcc(pki, backends, proxies):
    b = backends(echo_headers, name="web")
    server = pki.issue("shop", "shop.example")
    client_cert, client_key = pki.issue_with_uri("client", "client.example", "spiffe://example/orders")
    svc = "services:\n" + service_config("svc", [b])
    req = proxies(tls_listen([server], f"client_auth: required\nclient_ca: {pki.ca_path}") + svc)
    # Without a certificate the handshake (or the first read, in TLS 1.3) fails; nothing reaches the backend.
    with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError, OSError)):
        c = Client(req.addr, context=tls_client_context(pki.ca_path), server_hostname="shop.example")
        c.request("GET", "/", "svc")
    assert b.connections == 0
    c = Client(req.addr, context=tls_client_context(pki.ca_path, client_cert, client_key), server_hostname="shop.example")
    r = c.request("GET", "/", "svc", [("X-Forwarded-Client-Cert", "Hash=forged")])
    c.close()
    assert r.status == 200
    xfcc = [l for l in r.body.decode().split("\n") if l.lower().startswith("x-forwarded-client-cert")]
    assert len(xfcc) == 1, xfcc
    value = xfcc[0].split(": ", 1)[1]
    assert re.match(r'^Hash=[0-9a-f]{64};Subject="CN=client\.example,O=Example\\\\, Inc\.";URI=spiffe://example/orders;DNS=client\.example$', value), value
    # optional: a client without a certificate is served, with no XFCC.
    opt = proxies(tls_listen([server], f"client_auth: optional\nclient_ca: {pki.ca_path}") + svc)
    c = Client(opt.addr, context=tls_client_context(pki.ca_path), server_hostname="shop.example")
    r = c.request("GET", "/", "svc", [("X-Forwarded-Client-Cert", "Hash=forged")])
    c.close()
    assert r.status == 200 and "forged" not in r.body.decode() and "Client-Cert" not in r.body.decode()


def test_quiet_keep_alive_connections_give_back_their_tls_buffers(pki, backends, proxies):
    """HTTP/1.1 over TLS. A busy keep-alive connection keeps OpenSSL's record buffers (two of about
    17 KiB) from one request to the next; 1,000 clients answered once and then quiet give them back
    (and their output storage) 100 ms into the idle wait, so each costs what its TLS session is."""
    n = 1000
    raise_fd_limit(2 * n + 200)
    b = backends()
    p = proxies(tls_listen([pki.issue("shop", "shop.example")]) + "services:\n" + service_config("svc", [b]))
    if p.sanitized():
        pytest.skip("RSS under a sanitizer measures its shadow memory, not the proxy's")
    ctx = tls_client_context(pki.ca_path)
    warm = [Client(p.addr, context=ctx, server_hostname="shop.example") for _ in range(50)]
    for c in warm:
        assert c.request(host="svc").status == 200
    base = p.rss_kb()
    clients = []
    for _ in range(n):
        c = Client(p.addr, context=ctx, server_hostname="shop.example")
        assert c.request(host="svc").status == 200
        clients.append(c)
    for c in warm:  # still the same connection after its quiet spell
        assert c.request(host="svc").status == 200
    per_kib = (p.rss_kb() - base) / n
    for c in clients + warm:
        c.close()
    assert per_kib < 24, f"{per_kib:.1f} KiB per quiet TLS keep-alive connection"


def test_unfinished_handshakes_are_cut_at_header_timeout_and_slow_nobody_else(pki, backends, proxies):
    b = backends(name="web")
    p = proxies(tls_listen([pki.issue("shop", "shop.example")]) + "client:\n  header_timeout: 1s\n" + "services:\n" + service_config("svc", [b]))
    # 300 clients that send half a ClientHello record and stop.
    stuck = []
    for _ in range(300):
        s = socket.create_connection(p.addr, timeout=30)
        s.sendall(bytes([22, 3, 1, 0x40, 0x00]) + b"\x01" * 100)  # a 16 KiB record promised, 100 bytes sent
        stuck.append(s)
    c = Client(p.addr, context=tls_client_context(pki.ca_path), server_hostname="shop.example")
    assert c.request("GET", "/", "svc").status == 200  # served while they hang
    c.close()

    def all_closed():
        for s in stuck:
            s.settimeout(30)
            try:
                if s.recv(1) not in (b"",):
                    continue
            except OSError:
                pass
        return True

    assert all_closed()
    for s in stuck:
        s.close()
    assert b.connections == 1


# ---------------------------------------------------------------- to instances

def tls_backend(pki, name, handler=None, require_client=False, hosts=("127.0.0.1", "backend.internal")):
    cert, key = pki.issue(name, *hosts)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca_path)
    return Backend(handler or echo_headers, name, tls=ctx)


def test_upstream_tls_verified_pooled_and_a_bad_certificate_is_502(pki, proxies):
    good = tls_backend(pki, "good")
    other_ca = Pki(os.path.join(pki.d, "other"))
    bad = tls_backend(other_ca, "bad")
    try:
        cfg = f"""
services:
  secure:
    instances: [{{ address: {good.address} }}]
    tls: {{ ca: {pki.ca_path}, server_name: backend.internal }}
  untrusted:
    instances: [{{ address: {bad.address} }}]
    tls: {{ ca: {pki.ca_path} }}
    retry: {{ attempts: 1 }}
"""
        p = proxies(cfg)
        c = Client(p.addr)
        for _ in range(3):
            r = c.request("GET", "/", "secure")
            assert r.status == 200 and b"X-Forwarded-Proto" in r.body
        c.close()
        assert good.connections == 1  # one TLS connection, kept alive and reused
        r = Client(p.addr).request("GET", "/", "untrusted")
        assert r.status == 502 and r.json()["error"] == "upstream_failed", r.body
        assert "certificate verify failed" in r.json()["message"], r.body
        assert metric(p, "switchyard_upstream_tls_failures_total", service="untrusted", reason="certificate_verify_failed") == 1
        p.wait_log("TLS to untrusted/")
        assert len(bad.requests) == 0
    finally:
        good.stop()
        bad.stop()


def test_upstream_name_is_the_host_by_default_and_mtls_to_the_instance(pki, proxies):
    mtls = tls_backend(pki, "mtls", require_client=True, hosts=("mtls.internal",))
    cert, key = pki.issue("proxy-client", "proxy.internal")
    try:
        cfg = f"""
routes:
  - {{ match: {{ host: mtls.internal }}, service: mtls }}
  - {{ match: {{ host: wrong.internal }}, service: mtls }}
services:
  mtls:
    instances: [{{ address: {mtls.address} }}]
    tls: {{ ca: {pki.ca_path}, cert: {cert}, key: {key} }}
    retry: {{ attempts: 1 }}
"""
        p = proxies(cfg)
        r = Client(p.addr).request("GET", "/", "mtls.internal")
        assert r.status == 200, r.body
        # The Host names the instance's certificate check: another name does not verify.
        r = Client(p.addr).request("GET", "/", "wrong.internal")
        assert r.status == 502 and "tls-failure" in r.json()["message"]
        assert metric(p, "switchyard_upstream_tls_failures_total", reason="name_mismatch") == 1
    finally:
        mtls.stop()


def test_instances_registered_over_tls_by_scheme_catalog_url_and_eureka_secure_port(pki, proxies):
    """A service with no TLS of its own whose instances say they speak it: the native API's
    "scheme": "https", the seed catalog's https:// URL, Eureka's securePort. The service's tls
    block with enabled: false says only how they are verified; a plain instance next to them stays
    plain. A service with no block at all verifies against the system bundle (SSL_CERT_FILE here)."""
    a = tls_backend(pki, "a", hosts=("mixed", "bundle", "hashed"))  # verified against the Host, as by default
    b = tls_backend(pki, "b", hosts=("mixed", "bundle"))  # verified against the Host, as by default
    c = tls_backend(pki, "c", hosts=("mixed", "bundle"))  # verified against the Host, as by default
    d = tls_backend(pki, "d", hosts=("mixed", "bundle"))  # verified against the Host, as by default
    plain = Backend(echo_headers, "plain")
    try:
        cfg = """
services:
  mixed:
    tls: { enabled: false, ca: %s }
    retry: { attempts: 1 }
  bundle:
    retry: { attempts: 1 }
  hashed:                      # built by the full-list builder (ring_hash): the TLS flag survives it
    lb: ring_hash
    hash_on: header:x-user
    tls: { enabled: false, ca: %s }
""" % (pki.ca_path, pki.ca_path)
        p = proxies(cfg, env=dict(os.environ, SSL_CERT_FILE=pki.ca_path))
        st, body, _ = admin(p.admin, "PUT", "/v1/services/mixed/instances/a", {"address": a.address, "scheme": "https"})
        assert st == 201, body
        assert admin(p.admin, "GET", "/v1/services/mixed/instances/a")[1]["scheme"] == "https"
        st, body, _ = admin(p.admin, "POST", "/v1/catalog", {"service_name": "mixed", "service_url": f"https://{b.address}/"})
        assert st == 201, body
        host, port = c.address.rsplit(":", 1)
        eureka = {"instance": {"instanceId": "c", "app": "MIXED", "ipAddr": host, "status": "UP",
                               "port": {"$": 1, "@enabled": "false"}, "securePort": {"$": int(port), "@enabled": "true"}}}
        st, body, _ = admin(p.admin, "POST", "/eureka/apps/MIXED", eureka)
        assert st == 204, body
        assert admin(p.admin, "PUT", "/v1/services/mixed/instances/plain", {"address": plain.address})[0] == 201
        assert admin(p.admin, "PUT", "/v1/services/bundle/instances/d", {"address": d.address, "scheme": "https"})[0] == 201
        cl = Client(p.addr)
        for _ in range(8):
            r = cl.request("GET", "/", "mixed")
            assert r.status == 200, r.body
        cl.close()
        for be in (a, b, c, plain):
            assert be.requests, f"{be.name} got no request"
        # Each TLS instance took one connection, reused (pooled as plain ones are).
        assert (a.connections, b.connections, c.connections) == (1, 1, 1)
        assert Client(p.addr).request("GET", "/", "bundle").status == 200
        seen = len(a.requests)
        assert admin(p.admin, "PUT", "/v1/services/hashed/instances/a", {"address": a.address, "scheme": "https"})[0] == 201
        r = Client(p.addr).request("GET", "/", "hashed", headers=[("x-user", "u1")])
        assert r.status == 200 and len(a.requests) == seen + 1, r.body  # over TLS, not plain text to a TLS port
        # The registries show the scheme back: the catalog's URL, Eureka's securePort.
        cat = {i["id"]: i["service_url"] for i in admin(p.admin, "GET", "/v1/catalog")[1] if i["service_name"] == "mixed"}
        assert cat["a"] == f"https://{a.address}" and cat["plain"] == f"http://{plain.address}", cat
        st, app, _ = admin(p.admin, "GET", "/eureka/apps/MIXED", headers=[("Accept", "application/json")])
        inst = {i["instanceId"]: i for i in app["application"]["instance"]}
        assert inst["c"]["securePort"] == {"$": int(port), "@enabled": "true"}, inst["c"]
        assert inst["plain"]["securePort"]["@enabled"] == "false"
        # Changing the scheme back is a new endpoint: the next request goes plain, and is refused
        # by the TLS backend (a plain request to a TLS port), not sent over the old TLS connection.
        assert admin(p.admin, "PUT", "/v1/services/bundle/instances/d", {"address": d.address})[0] == 200
        r = Client(p.addr).request("GET", "/", "bundle")
        assert r.status == 502, r.body
        assert d.connections >= 2
        assert admin(p.admin, "PUT", "/v1/services/mixed/instances/x", {"address": a.address, "scheme": "ftp"})[0] == 400
    finally:
        for be in (a, b, c, d, plain):
            be.stop()


def test_health_probes_use_the_service_tls(pki, proxies):
    good = tls_backend(pki, "good", hosts=("127.0.0.1",))
    other = Pki(os.path.join(pki.d, "other"))
    bad = tls_backend(other, "bad", hosts=("127.0.0.1",))
    try:
        cfg = f"""
services:
  svc:
    instances: [{{ address: {good.address}, id: good }}, {{ address: {bad.address}, id: bad }}]
    tls: {{ ca: {pki.ca_path} }}
    health_check: {{ path: /health, interval: 200ms, timeout: 150ms, unhealthy_threshold: 1, healthy_threshold: 1 }}
"""
        p = proxies(cfg)

        def states():
            _, body, _ = admin(p.admin, "GET", "/v1/services/svc")
            return {i["id"]: (i["state"], i.get("why", "")) for i in body["instances"]}

        wait_until(lambda: states()["good"][0] == "healthy" and states()["bad"][0] == "unhealthy", 30, what="probe verdicts")
        why = admin(p.admin, "GET", "/v1/services/svc/instances/bad")[1]["why"]
        assert "TLS" in why and "certificate verify failed" in why, why
        assert any(r.target == "/health" for r in good.requests)
    finally:
        good.stop()
        bad.stop()


# ---------------------------------------------------------------- admin, --check

def test_admin_over_tls_with_the_token(pki, proxies):
    cert, key = pki.issue("admin", "127.0.0.1")
    token = "s3cret-token-1"
    p = proxies(f"admin:\n  listen: 127.0.0.1:0\n  token: {token}\n  tls:\n    certificates:\n      - {{ cert: {cert}, key: {key} }}\n")
    ctx = tls_client_context(pki.ca_path)
    c = Client(p.admin, context=ctx)
    r = c.request("GET", "/v1/services", "admin")
    assert r.status == 200
    r = c.request("PUT", "/v1/services/x/instances/i1", "admin", [("Content-Type", "application/json")],
                  b'{"address": "127.0.0.1:9"}')
    assert r.status == 401
    r = c.request("PUT", "/v1/services/x/instances/i1", "admin", [("Content-Type", "application/json"), ("Authorization", f"Bearer {token}")],
                  b'{"address": "127.0.0.1:9"}')
    assert r.status in (200, 201), r.body
    c.close()
    assert metric_tls_admin(p, ctx) >= 1


def metric_tls_admin(p, ctx):
    c = Client(p.admin, context=ctx)
    r = c.request("GET", "/metrics", "admin")
    c.close()
    total = 0.0
    for line in r.body.decode().splitlines():
        if line.startswith("switchyard_tls_handshakes_total{") and 'listener="admin"' in line and 'result="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_check(cfg_path):
    from harness import BIN
    return subprocess.run([BIN, "--check", "-c", cfg_path], capture_output=True, timeout=30)


def test_check_reports_mismatch_missing_and_expired_with_positions(pki, tmp_path):
    cert, key = pki.issue("shop", "shop.example")
    _, other_key = pki.issue("other", "other.example")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""listen:
  - address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: {cert}, key: {other_key} }}
        - {{ cert: {tmp_path}/missing.crt, key: {key} }}
""")
    out = run_check(str(cfg))
    text = out.stdout.decode()
    assert out.returncode == 1, text
    assert re.search(re.escape(str(cfg)) + r":5:\d+: key .* does not match certificate", text), text
    assert re.search(re.escape(str(cfg)) + r":6:\d+: certificate file .*missing\.crt: No such file", text), text
    # An expired certificate loads with a warning (renewing it is the fix, not refusing to start).
    import datetime
    expired, expired_key = pki.issue("expired", "old.example", not_after=datetime.datetime(2020, 2, 1))
    cfg.write_text(f"listen:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: {expired}, key: {expired_key} }}\n")
    out = run_check(str(cfg))
    assert out.returncode == 0, out.stdout
    assert re.search(r":5:\d+: certificate .* expired .*\(warning\)", out.stdout.decode()), out.stdout
    # Config-level mistakes are the loader's, also with positions.
    cfg.write_text("listen:\n  - address: 127.0.0.1:0\n    tls:\n      certificates: []\n      min_version: \"1.1\"\n      client_auth: required\n")
    text = run_check(str(cfg)).stdout.decode()
    assert ":5:20: " in text and "min_version" in text, text
    assert "client_ca" in text and "needs at least one entry in 'certificates'" in text, text


def test_testssl_finds_nothing_high_or_critical(pki, backends, proxies, tmp_path):
    if not shutil.which("testssl"):
        pytest.skip("testssl.sh is not installed")
    b = backends(name="web")
    p = proxies(tls_listen([pki.issue("shop", "localhost", "127.0.0.1")]) + "services:\n" + service_config("svc", [b]))
    out_json = tmp_path / "testssl.json"
    res = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", str(out_json),
                          "--severity", "HIGH", "--ip", "one", "--fast", f"127.0.0.1:{p.addr[1]}"],
                         capture_output=True, timeout=540)
    import json
    findings = json.loads(out_json.read_text())
    # The server's protocols, ciphers and known attacks are ours to answer for; the test CA's
    # certificate itself (no CRL/OCSP URL, not publicly trusted) is not a server setting.
    bad = [f for f in findings if f.get("severity") in ("HIGH", "CRITICAL") and not f["id"].startswith("cert_")]
    assert not bad, bad


# ---------------------------------------------------------------- etcd

def test_shared_registry_over_tls_with_client_certificates(pki, backends, proxies, tmp_path):
    from etcd_cluster import EtcdCluster
    server_cert, server_key = pki.issue("etcd", "127.0.0.1", "localhost")
    client_cert, client_key = pki.issue("sy-client", "switchyard.internal")
    cluster = EtcdCluster(str(tmp_path), 3, tls={"ca": pki.ca_path, "cert": server_cert, "key": server_key,
                                                 "client_cert": client_cert, "client_key": client_key})
    try:
        endpoints = ", ".join(f"https://{e}" for e in cluster.endpoints)
        reg = f"""registry:
  backend: etcd
  etcd:
    endpoints: [{endpoints}]
    tls: {{ ca: {pki.ca_path}, cert: {client_cert}, key: {client_key} }}
"""
        a, b = proxies(reg), proxies(reg)
        for p in (a, b):
            wait_until(lambda p=p: admin(p.admin, "GET", "/readyz")[0] == 200, 60, what="shared registry read over TLS")
        web = backends(name="web")
        st, _, _ = admin(a.admin, "PUT", "/v1/services/orders/instances/o1", {"address": web.address})
        assert st == 201
        assert ("orders", "o1") in cluster.instances()  # written to etcd, over TLS
        wait_until(lambda: Client(b.addr).request("GET", "/", "orders").status == 200, 30, what="b to route the registration")
        # Without a client certificate etcd refuses the proxy: it never becomes ready.
        lonely = proxies(f"""registry:
  backend: etcd
  etcd:
    endpoints: [{endpoints}]
    tls: {{ ca: {pki.ca_path} }}
""")
        lonely.wait_log("TLS to etcd .* failed|etcd")
        assert admin(lonely.admin, "GET", "/readyz")[0] == 503
    finally:
        cluster.close()
