#!/usr/bin/env python3
"""Renders the Grafana dashboard (deploy/grafana/switchyard.json) to a PNG from a real Prometheus:
every panel's queries run against Prometheus' HTTP API (query_range) and are drawn with matplotlib.
Grafana itself is not packaged for Debian 12, so this is how the README's picture is made.

    python3 deploy/grafana/render_preview.py --prometheus http://127.0.0.1:9090 --out docs/dashboard.png
"""
import argparse
import json
import os
import re
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "") or json.dumps(labels)


def render(prometheus, dashboard_path, out, seconds):
    dash = json.load(open(dashboard_path))
    panels = dash["panels"]
    end = time.time()
    start = end - seconds
    step = max(1, seconds // 120)
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 5.6, rows * 3.0), squeeze=False)
    fig.patch.set_facecolor("#111217")
    series_drawn = 0
    for i, panel in enumerate(panels):
        ax = axes[i // cols][i % cols]
        ax.set_facecolor("#181b1f")
        ax.set_title(panel["title"], color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        for s in ax.spines.values():
            s.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.5)
        for t in panel["targets"]:
            for series in query_range(prometheus, t["expr"], start, end, step):
                xs = [float(v[0]) - end for v in series["values"]]
                ys = [float(v[1]) if v[1] not in ("NaN", "+Inf", "-Inf") else float("nan") for v in series["values"]]
                ax.plot(xs, ys, linewidth=1.2, label=legend(t.get("legendFormat"), series["metric"]))
                series_drawn += 1
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da")
        else:
            ax.text(0.5, 0.5, "no data", color="#9fa7b3", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("seconds before render", color="#9fa7b3", fontsize=7)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle(f"{dash['title']} — rendered from Prometheus data by deploy/grafana/render_preview.py",
                 color="#d8d9da", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80, facecolor=fig.get_facecolor())
    return series_drawn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default=os.path.join(HERE, "switchyard.json"))
    ap.add_argument("--out", default="dashboard.png")
    ap.add_argument("--seconds", type=int, default=300)
    a = ap.parse_args()
    print(f"{render(a.prometheus, a.dashboard, a.out, a.seconds)} series drawn into {a.out}")


if __name__ == "__main__":
    main()
