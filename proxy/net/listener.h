// A listening TCP socket on a loop. Knows nothing of HTTP: each new connection is handed to
// `on_connection(ctx, server, 0)`, which accepts it (or leaves it: libuv then stops watching the
// socket until uv_accept is called, and further clients wait in the kernel's backlog). A failed
// accept comes as `on_connection(ctx, server, UV_E...)` (EMFILE: libuv has closed that one).
#pragma once

#include <uv.h>

#include <string>

#include "conf/units.h"

namespace sy::net {

class Listener {
 public:
  using OnConnection = void (*)(void* ctx, uv_stream_t* server, int status);

  // Binds and listens. Returns "" or an error naming the address. `bound()` then holds the real
  // address (with the kernel's port when the configured one was 0).
  std::string open(uv_loop_t* loop, const conf::Address& addr, bool reuse_port, OnConnection cb, void* ctx);
  // Stops accepting; the object must stay alive until `closed()` (the close callback ran).
  void close();
  bool is_open() const { return open_; }
  const conf::Address& bound() const { return bound_; }

 private:
  static void on_connection(uv_stream_t* s, int status);
  uv_tcp_t tcp_{};
  conf::Address bound_;
  OnConnection cb_ = nullptr;
  void* ctx_ = nullptr;
  bool open_ = false;
};

}  // namespace sy::net
