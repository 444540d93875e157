"""Shared by the benchmark scripts: a free loopback port and a fast nginx upstream (backend-nginx.conf.in)."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import free_port, wait_until  # noqa: E402,F401 (free_port is re-exported)


def start_nginx_backend():
    """Starts nginx answering "ok" on a free port; returns (process, work dir, port) once it answers."""
    work = tempfile.mkdtemp()
    os.chmod(work, 0o755)  # nginx workers run unprivileged
    port = free_port()
    conf = open(os.path.join(HERE, "backend-nginx.conf.in")).read().replace("@PORT@", str(port)).replace("@DIR@", work)
    os.makedirs(f"{work}/tmp-{port}", exist_ok=True)
    open(f"{work}/nginx.conf", "w").write(conf)
    proc = subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf", "-p", work])
    wait_until(lambda: subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/"], capture_output=True).returncode == 0)
    return proc, work, port
