#!/usr/bin/env python3
"""Request-path cost of a rate-limited route against an unlimited one (issue 27: within 3 %).
    /usr/bin/python3 tests/bench/rate_limit_cost.py [--rounds N] [--profile DIR]
Instructions per keep-alive request (callgrind: repeatable on a shared VM), one nginx upstream, the
same binary ($SWITCHYARD_BIN, default build-release/switchyard) with no policy, a `key: none`
policy and a `key: source_ip` policy, each generous enough that every request passes (a refusal
never reaches an instance: it is cheaper, not the case to price). --profile keeps the callgrind
files of the larger runs in DIR for callgrind_annotate. ab sends one request at a time (a loop turn per
request: batching varies from run to run, and with it the loop's own instructions, ±1 % with 4
connections); the three are run in turn, N rounds (default 3), and the medians compared."""
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("SWITCHYARD_BIN", os.path.join(HERE, "..", "..", "build-release", "switchyard"))
from observability_cost import callgrind_per_request  # noqa: E402
from upstream import start_nginx_backend  # noqa: E402

POLICY = "rate_limits:\n  p: {{ rate: 100000/s, burst: 1000, key: {key} }}\n"
SERVICE = ("log_level: warn\nroutes:\n  - {{ match: {{ path_prefix: / }}, service: bench{limit} }}\n"
           "services:\n  bench:\n    instances: [{{ address: 127.0.0.1:{port} }}]\n")


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
    finally:
        nginx.terminate()
        nginx.wait()


if __name__ == "__main__":
    main()
