#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_h2_frames (tests/fuzz/corpus/fuzz_h2_frames/): client sessions
as python3-h2 (Debian) encodes them, everything after the connection preface (the target sends
the preface itself), each behind one byte that picks the target's write size.
   tests/fuzz/h2_seeds.py"""
import os

import h2.config
import h2.connection

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_h2_frames")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def session(build):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    build(c)
    data = c.data_to_send()
    assert data.startswith(PREFACE)
    return data[len(PREFACE):]


def head(path="/", host="svc", method="GET", extra=()):
    return [(":method", method), (":path", path), (":scheme", "http"), (":authority", host)] + list(extra)


def get(c):
    c.send_headers(1, head(extra=[("user-agent", "seed"), ("accept", "*/*")]), end_stream=True)


def post(c):
    body = b"x" * 3000
    c.send_headers(1, head("/upload", method="POST", extra=[("content-length", str(len(body)))]))
    c.send_data(1, body[:1000])
    c.send_data(1, body[1000:], end_stream=True)


def chunked_post(c):
    c.send_headers(1, head("/up", method="PUT"))
    c.send_data(1, b"abc")
    c.send_data(1, b"", end_stream=True)


def many(c):
    for i in range(6):
        c.send_headers(1 + 2 * i, head(f"/n{i}", host="svc" if i % 2 == 0 else "nowhere"), end_stream=True)


def control(c):
    c.ping(b"12345678")
    c.increment_flow_control_window(65535)
    c.send_headers(1, head(), end_stream=True)
    c.reset_stream(1)
    c.send_headers(3, head("/after", extra=[("cookie", "a=1"), ("cookie", "b=2")]), end_stream=True)
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})


def goaway(c):
    c.send_headers(1, head(), end_stream=True)
    c.close_connection()


SEEDS = {"get": (7, get), "post": (3, post), "chunked_post": (0, chunked_post), "many": (12, many),
         "control": (1, control), "goaway": (20, goaway)}

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, (piece, build) in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([piece]) + session(build))
    print(f"{len(SEEDS)} seeds in {OUT}")
