#!/usr/bin/env python3
"""What do metrics and the access log cost? (issue 6) Three switchyard processes on the same nginx
backend — metrics off, metrics on (the default), metrics on + access log to a file — driven by wrk in
turn (A B C A B C ...), medians of the rounds.
    /usr/bin/python3 tests/bench/observability_cost.py [ROUNDS]
    /usr/bin/python3 tests/bench/observability_cost.py --callgrind   (instructions per request: repeatable)"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from harness import Proxy, wait_until  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def wrk(p, secs):
    """(requests/s, p99 µs, proxy CPU µs per request): CPU per request is the steadier figure on a
    shared machine, since it does not depend on what else ran during the run."""
    c0 = cpu_seconds(p.proc.pid)
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{secs}s", "--latency", "-H", "Host: bench",
                          f"http://{p.addr[0]}:{p.addr[1]}/"], capture_output=True, text=True).stdout
    cpu = cpu_seconds(p.proc.pid) - c0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]
    return rps, p99, cpu / total * 1e6


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 5
    nginx, work, port = start_nginx_backend()
    try:
        svc = f"services:\n  bench:\n    instances: [{{ address: 127.0.0.1:{port} }}]\n"
        variants = {
            "metrics off": Proxy("log_level: warn\nmetrics: false\n" + svc, tmpdir=tempfile.mkdtemp()),
            "metrics on": Proxy("log_level: warn\n" + svc, tmpdir=tempfile.mkdtemp()),
            "metrics + access log": Proxy(f"log_level: warn\naccess_log: {work}/access.log\n" + svc, tmpdir=tempfile.mkdtemp()),
        }
        results = {k: [] for k in variants}
        for _ in range(rounds):
            for name, p in variants.items():
                results[name].append(wrk(p, 5))
        base = statistics.median(r for r, _, _ in results["metrics off"])
        base_cpu = statistics.median(c for _, _, c in results["metrics off"])
        for name, rs in results.items():
            rps = statistics.median(r for r, _, _ in rs)
            p99 = statistics.median(l for _, l, _ in rs)
            cpu = statistics.median(c for _, _, c in rs)
            print(f"{name:22s} {rps:9.0f} req/s  p99 {p99:5.0f} us  CPU {cpu:5.2f} us/request  "
                  f"throughput ratio {rps / base:.3f}  CPU ratio {cpu / base_cpu:.3f}")
        for p in variants.values():
            p.stop()
    finally:
        nginx.terminate()
        nginx.wait()




def callgrind_per_request(config_text, requests=(2000, 12000), keep=None, concurrency=4):
    """Instructions per request (callgrind counts instructions: repeatable, whatever the machine
    does). Two runs with different request counts; their difference cancels start-up and shutdown.
    `keep`: a path the larger run's callgrind file is copied to (for callgrind_annotate).
    `concurrency`: ab's connections (1: one request per loop turn, the least loop-batching noise)."""
    import signal as _signal
    totals = []
    for n in requests:
        d = tempfile.mkdtemp()
        cfg = os.path.join(d, "sy.yaml")
        open(cfg, "w").write("listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\n" + config_text)
        out = os.path.join(d, "callgrind.out")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", os.environ["SWITCHYARD_BIN"],
                                 "-c", cfg], stderr=subprocess.PIPE, text=True)
        addr = None
        for line in proc.stderr:
            m = re.search(r"listening proxy=(\S+)", line)
            if m:
                addr = m.group(1)
            if " ready " in line:
                break
        subprocess.run(["ab", "-q", "-k", "-n", str(n), "-c", str(concurrency), "-H", "Host: bench", f"http://{addr}/"],
                       capture_output=True, check=True)
        proc.send_signal(_signal.SIGTERM)
        proc.communicate(timeout=120)
        for line in open(out):
            if line.startswith("summary:") or line.startswith("totals:"):
                totals.append(int(line.split()[1]))
                break
        if keep:
            shutil.copy(out, keep)
    return (totals[1] - totals[0]) / (requests[1] - requests[0])


def callgrind_main():
    nginx, work, port = start_nginx_backend()
    try:
        svc = f"log_level: warn\nservices:\n  bench:\n    instances: [{{ address: 127.0.0.1:{port} }}]\n"
        off = callgrind_per_request("metrics: false\n" + svc)
        on = callgrind_per_request(svc)
        log = callgrind_per_request(f"access_log: {work}/access.log\n" + svc)
        print(f"instructions per request (callgrind): metrics off {off:.0f}, metrics on {on:.0f} "
              f"(+{(on / off - 1) * 100:.1f} %), metrics + access log {log:.0f} (+{(log / off - 1) * 100:.1f} %)")
    finally:
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    if "--callgrind" in sys.argv:
        callgrind_main()
    else:
        main()
