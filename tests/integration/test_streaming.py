"""Bodies stream both ways with flat memory, and backpressure holds when one side is slow."""
import os
import time

from harness import Client, TcpServer

GIB = 1 << 30
CHUNK = 1 << 20


class StreamBackend(TcpServer):
    """Upload: reads the whole request body, counting, then answers the count.
    Download: answers GET /download/N with N bytes, Content-Length or chunked."""

    def __init__(self):
        self.received = 0
        super().__init__(self._serve)

    def _serve(self, conn, r):
        while True:
            start, headers = r.read_head()
            h = {k.lower(): v for k, v in headers}
            method, target = start.split(" ")[:2]
            if method == "POST":
                n = 0
                if h.get("transfer-encoding") == "chunked":
                    while True:
                        size = int(r.read_until(b"\r\n").split(b";")[0], 16)
                        if size == 0:
                            r.read_until(b"\r\n")
                            break
                        left = size
                        while left:
                            take = min(left, len(r.buf)) if r.buf else 0
                            if take:
                                r.buf = r.buf[take:]
                            else:
                                data = conn.recv(min(left, CHUNK))
                                if not data:
                                    raise EOFError
                                take = len(data)
                            left -= take
                            n += take
                        r.read_exact(2)
                else:
                    left = int(h.get("content-length", "0"))
                    n = left
                    take = min(left, len(r.buf))
                    r.buf = r.buf[take:]
                    left -= take
                    while left:
                        data = conn.recv(min(left, CHUNK))
                        if not data:
                            raise EOFError
                        left -= len(data)
                self.received = n
                body = str(n).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            else:
                size = int(target.rsplit("/", 1)[1])
                chunked = "chunked" in target
                block = b"z" * CHUNK
                if chunked:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                left = size
                while left:
                    part = block[:min(left, CHUNK)]
                    if chunked:
                        conn.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                    else:
                        conn.sendall(part)
                    left -= len(part)
                if chunked:
                    conn.sendall(b"0\r\n\r\n")


def config(b):
    return f"services:\n  svc:\n    instances:\n      - {{ address: {b.address} }}\n"


def upload(addr, total, chunked=False):
    c = Client(addr, timeout=120)
    if chunked:
        c.send(b"POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n")
    else:
        c.send(b"POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % total)
    block = memoryview(b"a" * CHUNK)
    left = total
    while left:
        part = block[:min(left, CHUNK)]
        if chunked:
            c.sock.sendall(b"%x\r\n" % len(part))
            c.sock.sendall(part)
            c.sock.sendall(b"\r\n")
        else:
            c.sock.sendall(part)
        left -= len(part)
    if chunked:
        c.send(b"0\r\n\r\n")
    r = c.reader.read_response()
    c.close()
    return r


def download(addr, total, chunked=False, slow=False):
    c = Client(addr, timeout=120)
    c.send(b"GET /download/%s%d HTTP/1.1\r\nHost: svc\r\n\r\n" % (b"chunked/" if chunked else b"", total))
    start, headers = c.reader.read_head()
    got = len(c.reader.buf)
    c.reader.buf = b""
    # Count raw bytes (framing included for chunked) until the expected amount has arrived.
    expect = total
    while got < expect:
        data = c.sock.recv(CHUNK)
        if not data:
            break
        got += len(data)
        if slow:
            time.sleep(0.002)
        if chunked and got >= expect:
            # framing overhead: keep reading until the terminating chunk
            if data.endswith(b"0\r\n\r\n"):
                break
            expect = got + 1
    c.close()
    return start, got


def test_one_gib_upload_streams_with_flat_memory(proxies):
    b = StreamBackend()
    p = proxies(config(b))
    r = upload(p.addr, 16 * CHUNK)
    assert r.status == 200 and r.body == str(16 * CHUNK).encode()
    before = p.rss_peak_kb()
    r = upload(p.addr, GIB)
    assert r.status == 200 and r.body == str(GIB).encode()
    growth = p.rss_peak_kb() - before
    assert growth < 32 * 1024, f"peak RSS grew {growth} KiB while streaming 1 GiB"


def test_one_gib_download_streams_with_flat_memory(proxies):
    b = StreamBackend()
    p = proxies(config(b))
    download(p.addr, 16 * CHUNK)
    before = p.rss_peak_kb()
    start, got = download(p.addr, GIB)
    assert start.startswith("HTTP/1.1 200") and got == GIB
    growth = p.rss_peak_kb() - before
    assert growth < 32 * 1024, f"peak RSS grew {growth} KiB while streaming 1 GiB"


def test_chunked_both_ways_large(proxies):
    b = StreamBackend()
    p = proxies(config(b))
    r = upload(p.addr, 64 * CHUNK + 123, chunked=True)
    assert r.body == str(64 * CHUNK + 123).encode()
    start, got = download(p.addr, 64 * CHUNK, chunked=True)
    assert start.startswith("HTTP/1.1 200") and got > 64 * CHUNK


def test_backpressure_slow_client_keeps_memory_bounded(proxies):
    b = StreamBackend()
    p = proxies(config(b))
    download(p.addr, 4 * CHUNK)
    before = p.rss_peak_kb()
    # A client that reads slowly while the backend could send 256 MiB at once.
    start, got = download(p.addr, 256 * CHUNK, slow=True)
    assert got == 256 * CHUNK
    growth = p.rss_peak_kb() - before
    assert growth < 16 * 1024, f"peak RSS grew {growth} KiB behind a slow client"
