// What the unit tests of I/O objects share: a TCP listener on 127.0.0.1 port 0 on a real libuv
// loop, running the loop until a condition holds (bounded by a count of turns, never by time), and
// ending a loop with every handle closed (uv_loop_close() == 0 is each test's last check).
#pragma once

#include <doctest.h>
#include <uv.h>

#include <string>

#include "conf/config.h"

namespace sy::test {

// Binds `server` to 127.0.0.1:0 on `loop` and listens; server.data = `data`. Returns the address
// the kernel picked.
inline conf::Address listen_loopback(uv_loop_t* loop, uv_tcp_t* server, void* data, uv_connection_cb on_connection,
                                     int backlog = 16) {
  uv_tcp_init(loop, server);
  sockaddr_in a{};
  uv_ip4_addr("127.0.0.1", 0, &a);
  REQUIRE(uv_tcp_bind(server, reinterpret_cast<const sockaddr*>(&a), 0) == 0);
  server->data = data;
  REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(server), backlog, on_connection) == 0);
  sockaddr_storage bound{};
  int len = sizeof bound;
  REQUIRE(uv_tcp_getsockname(server, reinterpret_cast<sockaddr*>(&bound), &len) == 0);
  conf::Address addr;
  const int port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  REQUIRE(conf::parse_address("127.0.0.1:" + std::to_string(port), addr, false).empty());
  return addr;
}

// Runs `loop` one turn at a time until `done()` holds; fails the test if it never does.
template <typename P>
void run_until(uv_loop_t* loop, P done) {
  for (int i = 0; i < 100000 && !done(); ++i) uv_run(loop, UV_RUN_ONCE);
  REQUIRE(done());
}

// Runs `loop` until nothing is left (the handles are closed by now) and checks it closes cleanly.
inline void finish_loop(uv_loop_t* loop) {
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(loop) == 0);
}

}  // namespace sy::test
