#!/usr/bin/env python3
"""An aiohttp service that registers itself with switchyard (Debian: python3-aiohttp).

On start it registers with its own health path and a TTL, heartbeats at a third of the TTL
(registering again if switchyard forgot it), and on SIGTERM deregisters first, lets in-flight
requests finish, then exits: clients see no failed request.

    python3 deploy/examples/aiohttp_service.py --port 8001 --name orders \
        --admin http://127.0.0.1:9901 [--token T] [--id orders-1]
"""
import argparse
import asyncio
import json
import signal

from aiohttp import ClientSession, web


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
    ap.add_argument("--name", default="orders", help="service name to register under")
    ap.add_argument("--id", default=None, help="instance id (default NAME-PORT)")
    ap.add_argument("--admin", default="http://127.0.0.1:9901", help="switchyard admin URL")
    ap.add_argument("--token", default="", help="switchyard admin.token, if set")
    ap.add_argument("--ttl", type=float, default=9.0, help="lease in seconds")
    return ap.parse_args()


async def main():
    args = parse_args()
    instance_id = args.id or f"{args.name}-{args.port}"
    base = f"{args.admin}/v1/services/{args.name}/instances/{instance_id}"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    served = 0

    async def hello(request):
        nonlocal served
        served += 1
        return web.json_response({"service": args.name, "instance": instance_id, "path": request.path_qs,
                                  "served": served})

    async def health(request):
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()

    registration = {"address": f"{advertised_ip(args)}:{args.port}", "ttl": f"{args.ttl}s",
                    "health_check": {"type": "http", "path": "/health", "interval": "2s"},
                    "meta": {"framework": "aiohttp"}}
    async with ClientSession(headers=headers) as http:
        async def register():
            async with http.put(base, json=registration) as r:
                if r.status >= 300:
                    raise RuntimeError(f"registration refused: {r.status} {await r.text()}")

        await register()
        print(f"{instance_id} registered at {args.host}:{args.port}", flush=True)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def heartbeat():
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), args.ttl / 3)
                    return
                except asyncio.TimeoutError:
                    pass
                try:
                    async with http.put(base + "/heartbeat") as r:
                        if r.status == 404:  # the proxy forgot us (restart without snapshot): register again
                            await register()
                except Exception as e:  # the proxy may be restarting; keep trying
                    print(f"heartbeat failed: {e}", flush=True)

        beat = asyncio.create_task(heartbeat())
        await stop.wait()
        await beat
        # Deregister first: once switchyard answers, it sends us no new request.
        try:
            async with http.delete(base) as r:
                print(f"{instance_id} deregistered ({r.status})", flush=True)
        except Exception as e:
            print(f"deregistration failed: {e}", flush=True)
    await runner.cleanup()  # finishes in-flight requests
    print(f"{instance_id} stopped after {served} requests", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
