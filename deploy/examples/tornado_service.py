#!/usr/bin/env python3
"""A Tornado service that registers itself with switchyard (Debian: python3-tornado).

Same life cycle as aiohttp_service.py: register with a health path and TTL, heartbeat at a
third of the TTL, on SIGTERM deregister, finish in-flight requests, exit.

    python3 deploy/examples/tornado_service.py --port 8002 --name orders \
        --admin http://127.0.0.1:9901 [--token T] [--id orders-2]
"""
import argparse
import asyncio
import json
import signal

import tornado.httpclient
import tornado.httpserver
import tornado.web


def advertised_ip(args):
    """switchyard registers IP addresses (it does no DNS): find the one to announce."""
    if args.advertise:
        return args.advertise
    if args.host not in ("0.0.0.0", ""):
        return args.host
    import socket
    import urllib.parse
    target = urllib.parse.urlparse(args.admin)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((socket.gethostbyname(target.hostname), target.port or 80))  # no packet is sent
        return s.getsockname()[0]
    finally:
        s.close()


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--advertise", default="", help="IP to register (default: --host, or when that is "
                    "0.0.0.0, the local address that reaches the admin API)")
    ap.add_argument("--name", default="orders")
    ap.add_argument("--id", default=None)
    ap.add_argument("--admin", default="http://127.0.0.1:9901")
    ap.add_argument("--token", default="")
    ap.add_argument("--ttl", type=float, default=9.0)
    return ap.parse_args()


async def main():
    args = parse_args()
    instance_id = args.id or f"{args.name}-{args.port}"
    base = f"{args.admin}/v1/services/{args.name}/instances/{instance_id}"
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    state = {"served": 0}

    class Hello(tornado.web.RequestHandler):
        def get(self, _=None):
            state["served"] += 1
            self.write({"service": args.name, "instance": instance_id, "path": self.request.uri,
                        "served": state["served"]})

        post = put = delete = get

    class Health(tornado.web.RequestHandler):
        def get(self):
            self.write("ok")

    app = tornado.web.Application([(r"/health", Health), (r"/(.*)", Hello)])
    server = tornado.httpserver.HTTPServer(app)
    server.listen(args.port, args.host)

    client = tornado.httpclient.AsyncHTTPClient()
    registration = {"address": f"{advertised_ip(args)}:{args.port}", "ttl": f"{args.ttl}s",
                    "health_check": {"type": "http", "path": "/health", "interval": "2s"},
                    "meta": {"framework": "tornado"}}

    async def call(method, url, body=None):
        return await client.fetch(url, method=method, headers=headers, raise_error=False,
                                  body=json.dumps(body) if body is not None else ("" if method in ("PUT", "POST") else None),
                                  allow_nonstandard_methods=True)

    r = await call("PUT", base, registration)
    if r.code >= 300:
        raise SystemExit(f"registration refused: {r.code} {r.body!r}")
    print(f"{instance_id} registered at {args.host}:{args.port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def heartbeat():
        while True:
            try:
                await asyncio.wait_for(stop.wait(), args.ttl / 3)
                return
            except asyncio.TimeoutError:
                pass
            try:
                r = await call("PUT", base + "/heartbeat")
                if r.code == 404:
                    await call("PUT", base, registration)
            except Exception as e:
                print(f"heartbeat failed: {e}", flush=True)

    await heartbeat()
    r = await call("DELETE", base)
    print(f"{instance_id} deregistered ({r.code})", flush=True)
    server.stop()  # no new connections
    await server.close_all_connections()  # in-flight requests finish
    print(f"{instance_id} stopped after {state['served']} requests", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
