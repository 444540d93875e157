"""A real etcd cluster on loopback for the shared-registry tests: N members (Debian's etcd-server),
ports picked free, data in a temporary directory. Members can be stopped (SIGTERM or SIGKILL) and
started again with their data; readiness is polled, never slept for."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
import uuid

from harness import free_port, wait_until

ETCD = shutil.which("etcd")


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return base64.b64decode(s).decode()


class EtcdCluster:
    def __init__(self, tmpdir, members=3, tls=None):
        """`tls`: {"ca", "cert", "key", "client_cert", "client_key"} files: clients then speak TLS
        and must show a certificate from `ca` (etcd's --client-cert-auth); peers stay plain."""
        self.tmpdir = tmpdir
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.token = "sy-" + uuid.uuid4().hex[:12]
        # etcd cannot bind port 0 and say which port it got: ports come from free_port(), and a port
        # another test took meanwhile makes a member exit at once. Then the cluster starts again on
        # new ports (a few times), rather than waiting out the election timeout.
        for attempt in range(4):
            self.members = []
            for i in range(members):
                self.members.append({"name": f"m{i}", "client": free_port(), "peer": free_port(), "proc": None,
                                     "dir": os.path.join(tmpdir, f"etcd-m{i}-{attempt}")})
            self.initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)
            for i in range(members):
                self.start(i, state="new")
            died = lambda: any(m["proc"].poll() is not None for m in self.members)  # noqa: E731
            wait_until(lambda: died() or self.healthy(), 120, 0.1, what="etcd cluster to elect a leader")
            if not died():
                return
            self.close()
        raise AssertionError("etcd members kept exiting at start (ports taken?); see etcd-*.log in " + tmpdir)

    @property
    def endpoints(self):
        return [f"127.0.0.1:{m['client']}" for m in self.members]

    def start(self, i, state="existing"):
        m = self.members[i]
        log = open(os.path.join(self.tmpdir, f"etcd-{m['name']}.log"), "ab")
        m["proc"] = subprocess.Popen([
            ETCD, "--name", m["name"], "--data-dir", m["dir"],
            "--listen-client-urls", f"{self.scheme}://127.0.0.1:{m['client']}",
            "--advertise-client-urls", f"{self.scheme}://127.0.0.1:{m['client']}",
            "--listen-peer-urls", f"http://127.0.0.1:{m['peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m['peer']}",
            "--initial-cluster", self.initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token, "--log-level", "warn", *self.tls_flags()],
            stdout=log, stderr=log)

    def tls_flags(self):
        if not self.tls:
            return []
        return ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]

    def stop(self, i, kill=False):
        p = self.members[i]["proc"]
        if p and p.poll() is None:
            p.kill() if kill else p.terminate()
            p.wait(60)
        self.members[i]["proc"] = None

    def pause(self, i):
        """SIGSTOP: the member keeps its connections open and answers nothing (a hung host)."""
        self.members[i]["proc"].send_signal(signal.SIGSTOP)

    def resume(self, i):
        self.members[i]["proc"].send_signal(signal.SIGCONT)

    def restart(self, i):
        self.start(i, state="existing")

    def close(self):
        for i in range(len(self.members)):
            self.stop(i, kill=True)

    # ---- direct access (what the tests check against) ----

    def call(self, path, body, member=None, timeout=10):
        order = [member] if member is not None else [i for i, m in enumerate(self.members) if m["proc"]]
        last = None
        for i in order:
            req = urllib.request.Request(f"{self.scheme}://127.0.0.1:{self.members[i]['client']}{path}",
                                         data=json.dumps(body).encode(), method="POST")
            ctx = None
            if self.tls:
                import ssl
                ctx = ssl.create_default_context(cafile=self.tls["ca"])
                ctx.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
            try:
                with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
                    return json.loads(r.read().splitlines()[0])
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
        raise AssertionError(f"no etcd member answered {path}: {last}")

    def healthy(self):
        try:
            self.call("/v3/kv/range", {"key": b64("health")}, timeout=2)
            return True
        except AssertionError:
            return False

    def instances(self, prefix="/switchyard/"):
        """{(service, id): document} for every instance key under the prefix."""
        start = prefix + "services/"
        end = start[:-1] + chr(ord(start[-1]) + 1)
        out = {}
        r = self.call("/v3/kv/range", {"key": b64(start), "range_end": b64(end)})
        for kv in r.get("kvs", []):
            doc = json.loads(unb64(kv["value"]))
            out[(doc["service"], doc["id"])] = doc
        return out

    def revision(self):
        return int(self.call("/v3/kv/range", {"key": b64("x"), "count_only": True})["header"]["revision"])

    def compact(self, revision):
        self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})


class StallingRelay:
    """A TCP relay in front of one etcd member that can silence the watch streams open through it:
    after stall_watches(), what etcd sends on those connections is dropped while they stay open
    (a watch that stalls without breaking); every other connection, and every watch opened
    afterwards, is relayed as usual."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.watches = []       # connections whose requests went to /v3/watch
        self.silenced = set()   # ids of connections whose answers are dropped
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stall_watches(self):
        with self.lock:
            self.silenced.update(id(c) for c in self.watches)
            return len(self.watches)

    def close(self):
        self.closed = True
        self.listener.close()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, from_client):
        conn = src if from_client else dst  # the client side names the connection
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and b"/v3/watch" in data:
                    with self.lock:
                        if conn not in self.watches:
                            self.watches.append(conn)
                if not from_client:
                    with self.lock:
                        if id(conn) in self.silenced:
                            continue
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
