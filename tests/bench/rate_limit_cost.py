#!/usr/bin/env python3
"""Request-path cost of a rate-limited route against an unlimited one (issue 27: within 3 %).
    /usr/bin/python3 tests/bench/rate_limit_cost.py [--rounds N] [--profile DIR]
Instructions per keep-alive request (callgrind: repeatable on a shared VM), one nginx upstream, the
same binary ($SWITCHYARD_BIN, default build-release/switchyard) with no policy, a `key: none`
policy and a `key: source_ip` policy, each generous enough that every request passes (a refusal
never reaches an instance: it is cheaper, not the case to price). --profile keeps the callgrind
files of the larger runs in DIR for callgrind_annotate. ab sends one request at a time (a loop turn per
request: batching varies from run to run, and with it the loop's own instructions, ±1 % with 4
connections); the three are run in turn, N rounds (default 3), and the medians compared.
Then the memory of 100,000 kept keys (issue 27: at most 20 MB): the resident-set growth of a proxy
(the same binary, run natively) after 100,000 requests with distinct `header:X-Key` keys under
`max_keys: 100000`, against a service with no instance (the limiter runs, the proxy answers 503)."""
import os
import socket
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from harness import Proxy  # noqa: E402
from observability_cost import callgrind_per_request  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402

POLICY = "rate_limits:\n  p: {{ rate: 100000/s, burst: 1000, key: {key} }}\n"
SERVICE = ("log_level: warn\nroutes:\n  - {{ match: {{ path_prefix: / }}, service: bench{limit} }}\n"
           "services:\n  bench:\n    instances: [{{ address: 127.0.0.1:{port} }}]\n")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def keys_memory(total=100000):
    """KiB of resident memory the proxy grows by while it comes to hold `total` keys."""
    p = Proxy('log_level: warn\nrate_limits:\n  many: { rate: 1/h, burst: 1, key: "header:X-Key", max_keys: 100000 }\n'
              "services:\n  svc: { rate_limit: many }\n")
    p.start()
    try:
        s = socket.create_connection(tuple(p.addr), timeout=60)
        # Warm-up on keys of their own (the connection's and the loop's buffers), then measure.
        batches = [range(i, i + 500) for i in range(-1000, total, 500)]
        before = None
        for batch in batches:
            if batch.start == 0:
                before = rss_kb(p.proc.pid)
            s.sendall(b"".join(b"GET / HTTP/1.1\r\nHost: svc\r\nX-Key: key-%d\r\n\r\n" % i for i in batch))
            buf = b""
            while buf.count(b"HTTP/1.1 ") < len(batch):
                chunk = s.recv(1 << 20)
                assert chunk, "the proxy closed the connection"
                buf += chunk
        s.close()
        return rss_kb(p.proc.pid) - before
    finally:
        p.stop()


def main():
    keep = sys.argv[sys.argv.index("--profile") + 1] if "--profile" in sys.argv else None
    nginx, _work, port = start_nginx_backend()
    try:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
        cases = (("unlimited", SERVICE.format(limit="", port=port)),
                 ("key: none", POLICY.format(key="none") + SERVICE.format(limit=", rate_limit: p", port=port)),
                 ("key: source_ip", POLICY.format(key="source_ip") + SERVICE.format(limit=", rate_limit: p", port=port)))
        results = {name: [] for name, _ in cases}
        for r in range(rounds):
            for name, cfg in cases:
                where = os.path.join(keep, name.replace(": ", "_")) if keep and r == 0 else None
                results[name].append(callgrind_per_request(cfg, keep=where, concurrency=1))
            print("round", r + 1, " ".join(f"{name}={v[-1]:.0f}" for name, v in results.items()), flush=True)
        base = statistics.median(results["unlimited"])
        for name, v in results.items():
            m = statistics.median(v)
            print(f"{name:15} {m:8.0f} instructions per request, median of {rounds} ({(m / base - 1) * 100:+.1f} %)")
        kb = keys_memory()
        print(f"100,000 kept keys: resident memory +{kb / 1024:.1f} MiB ({kb * 1024 / 100000:.0f} bytes per key)")
    finally:
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
