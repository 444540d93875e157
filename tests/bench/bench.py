#!/usr/bin/env python3
"""switchyard against HAProxy and nginx, side by side in one run (issue 7). Run it with
tests/bench/run.sh, which installs what is missing and builds the release binary first.

Contenders are configured alike (tests/bench/*.in): two nginx upstreams answering a small fixed body,
round robin, keep-alive to the upstreams, active health checks (HAProxy, switchyard; nginx open source
has none). Runs are interleaved (A B C A B C ...) so drift hits all alike; figures are medians.
Writes tests/bench/results.md and the README's performance section."""
import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
BIN = os.environ.get("SWITCHYARD_BIN", os.path.join(ROOT, "build-release", "switchyard"))
os.environ["SWITCHYARD_BIN"] = BIN
from harness import Client, request_bytes, wait_until  # noqa: E402
import json  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


from upstream import free_port  # noqa: E402


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def fill(template, **kw):
    text = open(os.path.join(HERE, template)).read()
    for k, v in kw.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def proc_tree(pid):
    """pid and its children (nginx workers)."""
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / CLK


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            total += int(open(f"/proc/{p}/statm").read().split()[1]) * PAGE // 1024
        except OSError:
            pass
    return total


def workdir(prefix):
    """A work directory nginx workers can read (www/ inside), with the open-file limit raised to
    the hard one (thousands of idle clients need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix=prefix)
    os.chmod(work, 0o755)
    os.makedirs(os.path.join(work, "www"), exist_ok=True)
    os.chmod(os.path.join(work, "www"), 0o755)
    return work


def start_upstreams(work):
    """The two nginx upstreams every contender proxies to (backend-nginx.conf.in): (ports, procs)."""
    ports, procs = [free_port(), free_port()], []
    for p in ports:
        os.makedirs(f"{work}/tmp-{p}", exist_ok=True)
        open(f"{work}/backend-{p}.conf", "w").write(fill("backend-nginx.conf.in", PORT=p, DIR=work))
        procs.append(subprocess.Popen(["nginx", "-c", f"{work}/backend-{p}.conf", "-p", work]))
    for p in ports:
        wait_until(lambda: port_open(p), 20, what="backend nginx")
    return ports, procs


class Contender:
    def __init__(self, name, work, b1, b2, workers, tag=""):
        self.name, self.work, self.b1, self.b2, self.workers = name, work, b1, b2, workers
        self.tag = tag
        self.port = free_port()
        self.proc = None
        self.admin = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def adjust(self, text):
        """The contender's config text as the template made it; subclasses change it (TLS, h2)."""
        return text

    def start(self):
        d = os.path.join(self.work, f"{self.name}-{self.workers}{self.tag}")
        os.makedirs(d, exist_ok=True)
        if self.name == "switchyard":
            cfg = os.path.join(d, "sy.yaml")
            open(cfg, "w").write(self.adjust(fill("switchyard.yaml.in", PORT=self.port, B1=self.b1, B2=self.b2, WORKERS=self.workers)))
            self.proc = subprocess.Popen([BIN, "-c", cfg], stderr=subprocess.PIPE, text=True)
            for line in self.proc.stderr:
                m = re.search(r"listening admin=(\S+):(\d+)", line)
                if m:
                    self.admin = (m.group(1), int(m.group(2)))
                if " ready " in line:
                    break
            self.proc.stderr.close()
        elif self.name == "haproxy":
            cfg = os.path.join(d, "haproxy.cfg")
            open(cfg, "w").write(self.adjust(fill("haproxy.cfg.in", PORT=self.port, B1=self.b1, B2=self.b2, THREADS=self.workers)))
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            for sub in ("proxy-body", "proxy-temp"):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            cfg = os.path.join(d, "nginx.conf")
            open(cfg, "w").write(self.adjust(fill("nginx-proxy.conf.in", PORT=self.port, B1=self.b1, B2=self.b2, WORKERS=self.workers, DIR=d)))
            self.proc = subprocess.Popen(["nginx", "-c", cfg, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), 20, what=f"{self.name} listening")
        time.sleep(1.2)  # let active health checks mark both upstreams up (1 s interval)
        return self

    def pids(self):
        return proc_tree(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wrk(addr, secs, conns=50, threads=1, url=None):
    """`url` instead of http://addr/ (https:// for the TLS benchmark)."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", "-H", "Host: bench",
                          url or f"http://{addr}/"], capture_output=True, text=True).stdout

    def lat(q):
        m = re.search(q + r"%\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": lat("50"), "p99": lat("99"),
            "total": total, "errors": errors}


def ab(addr, n=20000, conc=20):
    out = subprocess.run(["ab", "-q", "-n", str(n), "-c", str(conc), "-H", "Host: bench", f"http://{addr}/"],
                         capture_output=True, text=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    return {"rps": float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1)), "failed": failed}


def perf_stat(pids, secs):
    """CPU cycles and instructions (user + kernel) the processes spend over `secs`, from the
    hardware counters (perf stat): unlike wall-clock rates, barely moved by other tenants' load."""
    if not shutil.which("perf"):
        return None
    out = subprocess.run(["perf", "stat", "-x,", "-e", "cycles,instructions", "-p", ",".join(map(str, pids)), "--",
                          "sleep", str(secs)], capture_output=True, text=True).stderr
    vals = {}
    for line in out.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].isdigit():
            vals[f[2].split(":")[0]] = int(f[0])
    return vals if "cycles" in vals else None


def throughput_table(contenders, rounds, secs, wrk_threads=1):
    res = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            pids = c.pids()
            c0 = cpu_seconds(pids)
            # Hardware counters over the middle of the run (1 s in, secs - 2 long).
            box = {}
            t = threading.Thread(target=lambda: (time.sleep(1), box.update(perf=perf_stat(pids, max(1, secs - 2)))))
            t.start()
            r = wrk(c.addr, secs, threads=wrk_threads)
            t.join()
            r["cpu_per_100k"] = (cpu_seconds(pids) - c0) / r["total"] * 1e5
            perf = box.get("perf")
            r["cycles"] = perf["cycles"] / (r["rps"] * max(1, secs - 2)) if perf else float("nan")
            res[c.name].append(r)
    ab_res = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            ab_res[c.name].append(ab(c.addr))
    rows = {}
    for c in contenders:
        rs = res[c.name]
        rows[c.name] = {
            "rps": statistics.median(r["rps"] for r in rs), "p50": statistics.median(r["p50"] for r in rs),
            "p99": statistics.median(r["p99"] for r in rs), "cpu": statistics.median(r["cpu_per_100k"] for r in rs),
            "cycles": statistics.median(r["cycles"] for r in rs),
            "errors": sum(r["errors"] for r in rs), "ab": statistics.median(r["rps"] for r in ab_res[c.name]),
            "ab_failed": sum(r["failed"] for r in ab_res[c.name]),
        }
    return rows


def idle_memory(c, n, wrap=None, request=None, answered=None):
    """KiB of proxy memory per idle keep-alive client connection (one request each, then idle).
    `wrap` turns each socket into another (an SSL context's wrap_socket: idle TLS connections);
    `request` and `answered` replace the HTTP/1.1 request and its end (HTTP/2 frames)."""
    time.sleep(0.5)
    before = rss_kb(c.pids())
    socks = []
    req = request or request_bytes("GET", "/", "bench")
    done = answered or (lambda data: b"\r\n\r\n" in data and data.endswith(b"ok\n"))
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", c.port))
        if wrap:
            s = wrap(s)
        s.sendall(req)
        socks.append(s)
    for s in socks:
        data = b""
        while not done(data):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    time.sleep(1.0)
    after = rss_kb(c.pids())
    for s in socks:
        s.close()
    return (after - before) / n


def stream_1gib(addr):
    t0 = time.monotonic()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-H", "Host: bench",
                          f"http://{addr}/big/1g"], check=True, capture_output=True, text=True).stdout
    assert out == f"200 {1 << 30}", out
    return (1 << 30) / (time.monotonic() - t0) / 1e6  # MB/s


def admin_call(addr, method, path, body=None):
    c = Client(addr)
    data = json.dumps(body).encode() if body is not None else b""
    c.send(request_bytes(method, path, "admin", [("Content-Length", str(len(data)))], data))
    r = c.reader.read_response()
    c.close()
    return r.status


def register_extra(sy, target):
    """Grows sy's registry to `target` instances: the routed service `bench` gets 10 (alternating
    between the two upstreams), the rest go to 100 other services. What is measured is the cost of a
    large registry on the request path. (With all 10,000 in the routed service, round robin sends
    each request to an instance with no pooled connection, and what is measured is connection setup
    against the service's max_connections — the same for any proxy that pools per server.)"""
    a = Client(sy.admin)
    for i in range(2, target):
        addr = f"127.0.0.1:{sy.b1 if i % 2 else sy.b2}"
        service = "bench" if i < 10 else f"other-{i % 100}"
        body = json.dumps({"address": addr, "ttl": "1h", "health_check": {"type": "none"}}).encode()
        a.send(request_bytes("PUT", f"/v1/services/{service}/instances/extra-{i}", "admin",
                             [("Content-Length", str(len(body)))], body))
        assert a.reader.read_response().status == 201
    a.close()


def instance_scaling(work, b1, b2, secs, rounds):
    """requests/s of switchyard with 10, 1,000 and 10,000 registered instances: three processes,
    measured interleaved (A B C per round), medians; non-2xx answers are counted, not hidden."""
    procs = {n: Contender("switchyard", work, b1, b2, 1, tag=f"scale{n}").start() for n in (10, 1000, 10000)}
    try:
        for n, sy in procs.items():
            register_extra(sy, n)
        res = {n: [] for n in procs}
        for _ in range(rounds):
            for n, sy in procs.items():
                r = wrk(sy.addr, secs)
                assert r["errors"] == 0, f"{r['errors']} errors with {n} instances"
                res[n].append(r["rps"])
        return {n: statistics.median(v) for n, v in res.items()}
    finally:
        for sy in procs.values():
            sy.stop()


def scaling_instructions(b1):
    """Instructions per request (callgrind: repeatable, unlike wall-clock throughput on a shared VM)
    with 10 and with 10,000 instances in the registry (the routed service has 10 either way; the
    rest are static instances of 100 other services)."""
    from observability_cost import callgrind_per_request

    def config(total):
        lines = ["log_level: warn", "services:", "  bench:", "    instances:"]
        lines += [f"      - {{ id: b{i}, address: 127.0.0.1:{b1} }}" for i in range(10)]
        for svc in range(100 if total > 10 else 0):
            lines += [f"  other-{svc}:", "    instances:"]
            lines += [f"      - {{ id: o{i}, address: 127.0.0.1:{b1} }}" for i in range((total - 10) // 100)]
        return "\n".join(lines) + "\n"

    return {n: callgrind_per_request(config(n)) for n in (10, 10000)}


def probe_impact(sy, secs, rounds=3):
    base, probed = [], []
    a = None

    def put(i):
        body = json.dumps({"address": f"127.0.0.1:{sy.b1}", "ttl": "1h",
                           "health_check": {"type": "tcp", "interval": "1s", "timeout": "500ms"}}).encode()
        a.send(request_bytes("PUT", f"/v1/services/probed/instances/p{i}", "admin", [("Content-Length", str(len(body)))], body))
        assert a.reader.read_response().status == 201

    def delete(i):
        a.send(request_bytes("DELETE", f"/v1/services/probed/instances/p{i}", "admin", [("Content-Length", "0")]))
        assert a.reader.read_response().status == 204

    for _ in range(rounds):
        base.append(wrk(sy.addr, secs))
        # Opened after the wrk run: a connection with no request for client.header_timeout (10 s)
        # is closed, and a run of `secs` seconds on a busy machine may outlast it.
        a = Client(sy.admin)
        for i in range(5000):
            put(i)
        time.sleep(2)
        probed.append(wrk(sy.addr, secs))
        for i in range(5000):
            delete(i)
        a.close()
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    return {"base_rps": med(base, "rps"), "base_p99": med(base, "p99"), "probed_rps": med(probed, "rps"),
            "probed_p99": med(probed, "p99")}


def registration_latency(sy, rounds=200):
    a, c = Client(sy.admin), Client(("127.0.0.1", sy.port))
    samples = []
    for i in range(rounds):
        body = json.dumps({"address": f"127.0.0.1:{sy.b1}"}).encode()
        a.send(request_bytes("PUT", f"/v1/services/fresh{i}/instances/x", "admin", [("Content-Length", str(len(body)))], body))
        assert a.reader.read_response().status == 201
        t0 = time.perf_counter()
        r = c.request(host=f"fresh{i}")
        samples.append(time.perf_counter() - t0)
        assert r.status == 200
    return statistics.median(samples) * 1e6, max(samples) * 1e6


def fmt_row(name, r, ref):
    return (f"| {name} | {r['rps']:,.0f} | {r['rps'] / ref['rps']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | "
            f"{r['cpu']:.2f} | {r['cycles']:,.0f} | {r['cycles'] / ref['cycles']:.2f} | "
            f"{r['ab']:,.0f} | {r['ab'] / ref['ab']:.2f} | {r['errors'] + r['ab_failed']} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=10)
    # 9,000, not 10,000: this machine caps open files at 20,000 and HAProxy reserves two per connection.
    ap.add_argument("--idle", type=int, default=9000)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test of the benchmark)")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.secs, a.idle = 1, 3, 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 10,000 idle clients need fds
    work = tempfile.mkdtemp(prefix="switchyard-bench-")
    os.chmod(work, 0o755)  # nginx workers run unprivileged and must read www/
    os.makedirs(os.path.join(work, "www", "big"), exist_ok=True)
    with open(os.path.join(work, "www", "big", "1g"), "wb") as f:
        f.truncate(1 << 30)  # sparse: served from the page cache, no disk I/O
    for d in ("www", "www/big"):
        os.chmod(os.path.join(work, d), 0o755)
    os.chmod(os.path.join(work, "www", "big", "1g"), 0o644)
    backends = []
    ports = [free_port(), free_port()]
    for p in ports:
        os.makedirs(f"{work}/tmp-{p}", exist_ok=True)
        conf = fill("backend-nginx.conf.in", PORT=p, DIR=work)
        open(f"{work}/backend-{p}.conf", "w").write(conf)
        backends.append(subprocess.Popen(["nginx", "-c", f"{work}/backend-{p}.conf", "-p", work]))
    for p in ports:
        wait_until(lambda: port_open(p), 20, what="backend nginx")
    b1, b2 = ports
    versions = {
        "switchyard": subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip(),
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split("\n")[0][:32],
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
    }
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores ({cpu}), "
             f"{versions['switchyard']}, {versions['haproxy']}, {versions['nginx']}. wrk -t1 -c50, "
             f"{a.secs} s per run, {a.rounds} interleaved rounds, medians; ab -c20 without keep-alive; "
             "wrk, the two nginx upstreams and the proxy share the machine.", ""]
    try:
        for workers in (1, os.cpu_count() or 1):
            cs = [Contender(n, work, b1, b2, workers).start() for n in ("switchyard", "haproxy", "nginx")]
            try:
                rows = throughput_table(cs, a.rounds, a.secs, wrk_threads=workers)
                ref = rows["haproxy"]
                lines += [f"**{workers} worker{'s' if workers > 1 else ''}/thread{'s' if workers > 1 else ''} each**"
                          + (f" (wrk -t{workers})" if workers > 1 else ""), "",
                          "| proxy | keep-alive req/s | vs HAProxy | p50 µs | p99 µs | CPU s per 100k req | CPU cycles per req | vs HAProxy | conn-per-request req/s | vs HAProxy | errors |",
                          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
                for c in cs:
                    lines.append(fmt_row(c.name, rows[c.name], ref))
                lines.append("")
                if workers == 1:
                    mem = {c.name: idle_memory(c, a.idle) for c in cs}
                    # Interleaved like the rest: direct, then each proxy, three rounds.
                    runs = {n: [] for n in ["direct"] + [c.name for c in cs]}
                    for _ in range(3):
                        runs["direct"].append(stream_1gib(f"127.0.0.1:{b1}"))
                        for c in cs:
                            runs[c.name].append(stream_1gib(c.addr))
                    direct = statistics.median(runs["direct"])
                    streamed = {c.name: statistics.median(runs[c.name]) for c in cs}
                    lines += ["| proxy | memory per idle keep-alive connection | 1 GiB download through it | vs direct |",
                              "|---|---:|---:|---:|"]
                    for c in cs:
                        lines.append(f"| {c.name} | {mem[c.name] * 1024:,.0f} B | {streamed[c.name]:,.0f} MB/s | "
                                     f"{streamed[c.name] / direct:.2f} |")
                    lines += [f"| (direct to the upstream) | | {direct:,.0f} MB/s | 1.00 |", ""]
                    sy = cs[0]
                    scale = instance_scaling(work, b1, b2, a.secs, a.rounds)
                    probes = probe_impact(sy, a.secs, a.rounds)
                    instr = scaling_instructions(b1) if shutil.which("valgrind") else None
                    reg_med, reg_max = registration_latency(sy)
                    lines += ["| switchyard only | |", "|---|---:|"]
                    for n, rps in scale.items():
                        lines.append(f"| keep-alive req/s with {n:,} registered instances (10 in the routed service) | {rps:,.0f} ({rps / scale[10]:.2f} of 10) |")
                    if instr:
                        lines.append(f"| instructions per request (callgrind) with 10 / 10,000 registered instances | "
                                     f"{instr[10]:,.0f} / {instr[10000]:,.0f} ({instr[10000] / instr[10]:.3f}) |")
                    lines.append(f"| req/s and p99 while 5,000 instances are TCP-probed every 1 s | {probes['probed_rps']:,.0f} "
                                 f"({probes['probed_rps'] / probes['base_rps']:.2f} of {probes['base_rps']:,.0f}), p99 "
                                 f"{probes['probed_p99']:.0f} µs (vs {probes['base_p99']:.0f}) |")
                    lines.append(f"| registration answer → first request routed to it | median {reg_med:.0f} µs, max {reg_max:.0f} µs |")
                    lines.append("")
                else:
                    # Probes run on the main loop, beside (not in) the proxy workers.
                    probes = probe_impact(cs[0], a.secs, a.rounds)
                    lines += ["| switchyard only | |", "|---|---:|",
                              f"| req/s and p99 at {workers} workers while 5,000 instances are TCP-probed every 1 s | "
                              f"{probes['probed_rps']:,.0f} ({probes['probed_rps'] / probes['base_rps']:.2f} of "
                              f"{probes['base_rps']:,.0f}), p99 {probes['probed_p99']:.0f} µs (vs {probes['base_p99']:.0f}) |", ""]
            finally:
                for c in cs:
                    c.stop()
    finally:
        for b in backends:
            b.terminate()
            b.wait()
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if not a.quick:
        open(os.path.join(HERE, "results.md"), "w").write("# Benchmark results\n\n" + table)
        readme = os.path.join(ROOT, "README.md")
        text = open(readme).read()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start in text and end in text:
            text = text[:text.index(start) + len(start)] + "\n" + table + text[text.index(end):]
            open(readme, "w").write(text)


if __name__ == "__main__":
    main()
