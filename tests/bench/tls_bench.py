#!/usr/bin/env python3
"""TLS termination: switchyard against HAProxy and nginx, side by side in one run (issue 23).
Run it with tests/bench/run.sh --tls (installs what is missing, builds the release binary).

Every contender terminates TLS on the same ECDSA P-256 certificate (made here with `openssl req`)
in front of the same two plain nginx upstreams as tests/bench/bench.py, one worker/thread each, with
its defaults otherwise (TLS 1.3 negotiated; session tickets on). Measured, interleaved A B C per
round, medians:
  - HTTPS keep-alive requests/s and p99 (wrk -c50 over TLS), and the plain-HTTP figure of the same
    switchyard binary in the same run (what TLS costs, and that the plain path is unchanged);
  - new connections per second with one request each (`openssl s_time -www /`): full handshakes
    (`-new`) and resumed ones (`-reuse`, TLS 1.2: s_time cannot resume TLS 1.3);
  - memory per idle TLS keep-alive connection (one request each, then idle), --idle clients.
Writes tests/bench/tls_results.md and the README's TLS performance table."""
import argparse
import os
import re
import ssl
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import Contender  # noqa: E402


class TlsContender(Contender):
    """A contender whose listener terminates TLS with `pem` (cert + key in one file) — or, with
    tls=False, switchyard's plain listener (the A/B reference)."""

    def __init__(self, name, work, b1, b2, pem, tls=True):
        super().__init__(name, work, b1, b2, 1, tag="-tls" if tls else "-plain")
        self.pem, self.tls = pem, tls

    def adjust(self, text):
        if self.name == "switchyard":
            if self.tls:
                text = text.replace(f"listen: 127.0.0.1:{self.port}",
                                    f"listen:\n  - address: 127.0.0.1:{self.port}\n"
                                    f"    tls: {{ certificates: [ {{ cert: {self.pem} }} ] }}")
            # s_time's requests carry no Host: a catch-all route, as HAProxy's default_backend.
            return text + "routes:\n  - { service: bench }\n"
        if self.name == "haproxy":
            return text.replace(f"bind 127.0.0.1:{self.port}", f"bind 127.0.0.1:{self.port} ssl crt {self.pem} alpn http/1.1")
        return text.replace(f"listen 127.0.0.1:{self.port} reuseport;",
                            f"listen 127.0.0.1:{self.port} reuseport ssl;\n    ssl_certificate {self.pem};\n"
                            f"    ssl_certificate_key {self.pem};\n    ssl_session_cache shared:SSL:10m;")

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"


def s_time(port, mode, secs):
    """Handshakes per second: `-new` full ones, `-reuse` resumed ones (TLS 1.2: s_time resumes
    with the session it got from its first connection, which TLS 1.3 only sends after it)."""
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-time", str(secs), "-www", "/"]
    if mode == "-reuse":
        args.append("-tls1_2")
    out = subprocess.run(args, capture_output=True, text=True).stdout
    m = re.search(r"(\d+) connections in ([\d.]+)s", out)
    if not m:
        m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    assert m, out
    return int(m.group(1)) / float(m.group(2))


def make_certificate(work):
    """The one ECDSA P-256 certificate every contender serves (cert + key in one file, its path)."""
    key, cert, pem = (os.path.join(work, f) for f in ("key.pem", "cert.pem", "server.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    open(pem, "w").write(open(cert).read() + open(key).read())
    os.chmod(pem, 0o644)  # nginx reads it before dropping privileges; haproxy as root
    return pem


def idle_tls_memory(c, n):
    """KiB of proxy memory per idle TLS keep-alive client connection (bench.idle_memory over TLS)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return bench.idle_memory(c, n, wrap=ctx.wrap_socket)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--idle", type=int, default=9000)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test of the benchmark)")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.secs, a.idle = 1, 3, 1000
    work = bench.workdir("switchyard-tlsbench-")
    pem = make_certificate(work)
    ports, backends = bench.start_upstreams(work)
    b1, b2 = ports
    cs = [TlsContender(n, work, b1, b2, pem).start() for n in ("switchyard", "haproxy", "nginx")]
    plain = TlsContender("switchyard", work, b1, b2, pem, tls=False).start()
    try:
        runs = {id(c): [] for c in cs + [plain]}
        full = {c.name: [] for c in cs}
        resumed = {c.name: [] for c in cs}
        for _ in range(a.rounds):
            for c in cs + [plain]:
                runs[id(c)].append(bench.wrk(None, a.secs, url=c.url))
            for c in cs:
                full[c.name].append(s_time(c.port, "-new", a.secs))
            for c in cs:
                resumed[c.name].append(s_time(c.port, "-reuse", a.secs))
        mem = {c.name: idle_tls_memory(c, a.idle) for c in cs}
    finally:
        for c in cs + [plain]:
            c.stop()
        for b in backends:
            b.terminate()
            b.wait()
    med = statistics.median
    ref = {k: med(r["rps"] for r in runs[id(cs[1])]) for k in ("rps",)}
    hs_ref, rs_ref = med(full["haproxy"]), med(resumed["haproxy"])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    versions = [subprocess.run([bench.BIN, "--version"], capture_output=True, text=True).stdout.strip(),
                subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0][:32],
                subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
                subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()]
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores ({cpu}), "
             f"{', '.join(versions)}. One worker/thread each, ECDSA P-256 certificate, wrk -t1 -c50 over TLS "
             f"{a.secs} s per run, openssl s_time {a.secs} s per run, {a.rounds} interleaved rounds, medians; "
             f"idle memory with {a.idle:,} TLS clients. Clients, upstreams and proxy share the machine.", "",
             "| proxy | HTTPS keep-alive req/s | vs HAProxy | p99 µs | new connections/s, full handshake | vs HAProxy | "
             "new connections/s, resumed (TLS 1.2) | vs HAProxy | memory per idle TLS connection | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cs:
        rs = runs[id(c)]
        rps = med(r["rps"] for r in rs)
        lines.append(f"| {c.name} | {rps:,.0f} | {rps / ref['rps']:.2f} | {med(r['p99'] for r in rs):.0f} | "
                     f"{med(full[c.name]):,.0f} | {med(full[c.name]) / hs_ref:.2f} | {med(resumed[c.name]):,.0f} | "
                     f"{med(resumed[c.name]) / rs_ref:.2f} | {mem[c.name]:.1f} KiB | {sum(r['errors'] for r in rs)} |")
    prs = runs[id(plain)]
    sy_tls = med(r["rps"] for r in runs[id(cs[0])])
    lines += ["", f"The same switchyard binary over plain HTTP in the same rounds: {med(r['rps'] for r in prs):,.0f} "
              f"keep-alive req/s, p99 {med(r['p99'] for r in prs):.0f} µs (TLS costs "
              f"{(1 - sy_tls / med(r['rps'] for r in prs)) * 100:.0f} % of the plain rate)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.quick:
        open(os.path.join(HERE, "tls_results.md"), "w").write("# TLS benchmark (tests/bench/tls_bench.py)\n\n" + text)
        readme = os.path.join(os.path.dirname(os.path.dirname(HERE)), "README.md")
        r = open(readme).read()
        begin, end = "<!-- tls-bench:begin -->", "<!-- tls-bench:end -->"
        if begin in r and end in r:
            r = r[:r.index(begin) + len(begin)] + "\n" + text + r[r.index(end):]
            open(readme, "w").write(r)


if __name__ == "__main__":
    main()
