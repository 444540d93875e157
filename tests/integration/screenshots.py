"""Makes the dashboard screenshots the README shows (docs/img/dashboard-*.png): a proxy with a few
services, one failing its health checks, one instance draining, some traffic; then headless
chromium on the page's main views. Run by hand after changing the page:

    SWITCHYARD_BIN=$PWD/build/switchyard /usr/bin/python3 tests/integration/screenshots.py docs/img
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Backend, Proxy, admin, free_port, get, respond, wait_until  # noqa: E402


def shown(d, css):
    return d.execute_script("return !!document.querySelector(arguments[0])", css)


def rated(d, row_id):
    """The row of `row_id` shows a req/s figure (the page has drawn a second traffic reading)."""
    return d.execute_script(
        "const t = document.querySelector('table'); if (!t) return false;"
        "const heads = [...t.querySelectorAll('th')].map(h => h.innerText.trim());"
        "const col = heads.findIndex(h => h.startsWith('req/s'));"
        "const r = [...t.querySelectorAll('tbody tr')].find(r => r.dataset.id === arguments[0]);"
        "return !!r && col >= 0 && /\\d/.test(r.children[col].innerText);", row_id)


def main(out):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.makedirs(out, exist_ok=True)
    ok = [Backend(name=f"orders-{i}") for i in range(3)]

    def slow_500(conn, req, backend):
        respond(conn, 500 if len(backend.requests) % 4 == 0 else 200, b"x")
        return True
    flaky = Backend(slow_500, name="flaky")
    dead = free_port()
    p = Proxy(f"""
services:
  orders:
    lb: least_request
    instances: [{{address: "{ok[0].address}", zone: eu-1}}, {{address: "{ok[1].address}", zone: eu-2}}]
    health_check: {{path: /health, interval: 2s}}
  payments:
    instances: [{{address: "{ok[2].address}"}}, {{address: "127.0.0.1:{dead}"}}]
    health_check: {{path: /health, interval: 1s, timeout: 500ms, unhealthy_threshold: 1}}
""")
    try:
        for i in range(6):
            admin(p.admin, "PUT", f"/v1/services/catalog/instances/cat-{i}",
                  {"address": (flaky if i == 0 else ok[i % 3]).address, "tags": ["v2" if i % 2 else "v1", "web"],
                   "zone": f"eu-{i % 2 + 1}", "meta": {"team": "shop"}, "ttl": "0s"})
        admin(p.admin, "PUT", "/v1/services/catalog/instances/cat-3/drain", {"enabled": True})
        opts = Options()
        opts.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,800", "--force-device-scale-factor=1",
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
            opts.add_argument(a)
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        base = f"http://127.0.0.1:{p.admin[1]}/ui/"
        d.get(base + "#/service/catalog")  # looked at: its instances' traffic is read from now on
        wait_until(lambda: shown(d, 'tr[data-id="cat-0"]'), 30, what="the catalog page")
        d.get(base)
        deadline = time.monotonic() + 8  # a few readings, so req/s and latency show
        while time.monotonic() < deadline:
            for host in ("orders", "catalog", "payments"):
                get(p.addr, host=host)
        # Each view once it shows what the picture is for: rates (a number, not "–"), the events.
        d.get(base + "#/services")
        wait_until(lambda: rated(d, "orders"), 60, interval=0.2, what="the services' rates")
        d.save_screenshot(os.path.join(out, "dashboard-services.png"))
        d.get(base + "#/service/catalog?sort=err5xx_s&order=desc")
        wait_until(lambda: rated(d, "cat-0"), 60, interval=0.2, what="the instances' rates")
        d.save_screenshot(os.path.join(out, "dashboard-instances.png"))
        d.get(base + "#/events")
        wait_until(lambda: shown(d, "ol.events li"), 30, interval=0.2, what="the events")
        d.save_screenshot(os.path.join(out, "dashboard-events.png"))
        d.quit()
    finally:
        p.stop()
        for b in ok + [flaky]:
            b.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
