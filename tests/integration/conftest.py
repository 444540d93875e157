import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from harness import H2_MODE, TLS_MODE, Backend, Proxy, respond  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "plaintext: talks plain TCP to the proxy listener; not rerun in the TLS run")
    config.addinivalue_line("markers", "http1: asserts HTTP/1.1 semantics through get(); not rerun in the HTTP/2 run")


def pytest_collection_modifyitems(config, items):
    # SWITCHYARD_TEST_TLS=1 (the TLS rerun of the request-path tests): what only makes sense in
    # plain text is skipped, and says so.
    # SWITCHYARD_TEST_H2=1 (the HTTP/2 rerun): get() speaks HTTP/2; what asserts HTTP/1.1 itself is skipped.
    if H2_MODE:
        skip = pytest.mark.skip(reason="HTTP/1.1 semantics (Connection-named headers, Via 1.1): test_http2.py covers HTTP/2's")
        for item in items:
            if "http1" in item.keywords:
                item.add_marker(skip)
    if not TLS_MODE:
        return
    skip = pytest.mark.skip(reason="plaintext only (the TLS run covers it by test_tls.py)")
    for item in items:
        if "plaintext" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def backends():
    made = []

    def make(handler=None, name=None):
        b = Backend(handler, name or f"b{len(made)}")
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def proxies(tmp_path):
    """Starts switchyard processes; on teardown each must exit 0 on SIGTERM with no sanitizer report."""
    made = []

    def make(config_text="", **kw):
        kw.setdefault("tmpdir", str(tmp_path))
        p = Proxy(config_text, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        code = p.stop()
        log = p.log()
        assert "Sanitizer" not in log and "runtime error:" not in log, log
        if not getattr(p, "killed", False):
            assert code == 0, f"switchyard exited {code}:\n{log}"


def make_browser(extra_args=()):
    """Debian's chromium, headless, through chromedriver (python3-selenium), with every host name
    but loopback unresolvable: nothing may come from another host. Returns (driver, cleanup)."""
    import shutil
    import tempfile
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="switchyard-chromium-")
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", f"--user-data-dir={profile}", *extra_args):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    d.set_page_load_timeout(120)
    d.set_script_timeout(120)

    def cleanup():
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return d, cleanup


@pytest.fixture
def browser():
    d, cleanup = make_browser()
    yield d
    cleanup()


def holding_backend(backends, name=None, body=b"ok", only=None):
    """A backend that holds requests (all, or those for path `only`) until the returned event is
    set, then answers 200 with `body`. Returns (backend, event)."""
    import threading

    release = threading.Event()

    def handler(conn, req, backend):
        if only is None or req.target == only:
            release.wait(10)
        respond(conn, 200, body)
        return True

    return backends(handler, name=name), release


def service_config(name, backends, extra=""):
    lines = [f"  {name}:", "    instances:"]
    for b in backends:
        lines.append(f"      - {{ address: {b.address} }}")
    if extra:
        lines.extend("    " + l for l in extra.strip("\n").split("\n"))
    return "\n".join(lines) + "\n"
