// The socket and timer pair every connection object holds (client, upstream, admin, etcd, probe
// connections), and the one way to end them: close both handles, then — once both close callbacks
// have run — tell the owner it may free itself. Also the lingering close's first step (FIN, keep
// reading). A member of its owner, not a base class: each owner keeps its own state machine, and
// both handles' `data` point to the owner, so libuv callbacks reach it directly.
#pragma once

#include <uv.h>

#include <cstddef>

#include "proxy/net/assert.h"
#include "proxy/net/close.h"

namespace sy::net {

struct TcpConn {
  uv_tcp_t tcp{};
  uv_timer_t timer{};

  // Called once, after both handles are closed: the owner deletes itself there.
  using Gone = void (*)(void* owner);

  void init(uv_loop_t* loop, void* owner) {
    owner_ = owner;
    uv_tcp_init(loop, &tcp);
    uv_timer_init(loop, &timer);
    tcp.data = timer.data = owner;
  }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
  void arm(uint64_t ms, uv_timer_cb cb) { uv_timer_start(&timer, cb, ms, 0); }
  void disarm() { uv_timer_stop(&timer); }
  bool closing() const { return pending_ > 0; }

  // Idempotent.
  void close(Gone gone) {
    if (pending_ > 0) return;
    gone_ = gone;
    pending_ = 2;
    uv_timer_stop(&timer);
    close_socket(reinterpret_cast<uv_handle_t*>(&tcp), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_closed);
  }

  // Lingering close, first step: send FIN once queued writes are out; the owner keeps reading (and
  // discarding) until the peer closes or its linger timer runs out. `cb` gets the owner as
  // req->data. False: the shutdown could not start (close instead).
  bool shutdown_write(uv_shutdown_cb cb) {
    shutdown_req_.data = owner_;
    return uv_shutdown(&shutdown_req_, stream(), cb) == 0;
  }

  // Internal (public only so that the struct stays standard-layout for offsetof).
  static void on_closed(uv_handle_t* h) {
    const size_t off = h->type == UV_TCP ? offsetof(TcpConn, tcp) : offsetof(TcpConn, timer);
    auto* c = reinterpret_cast<TcpConn*>(reinterpret_cast<char*>(h) - off);
    SY_ASSERT(c->pending_ > 0);  // two handles, one close callback each
    if (--c->pending_ == 0) c->gone_(c->owner_);
  }

  uv_shutdown_t shutdown_req_{};
  void* owner_ = nullptr;
  Gone gone_ = nullptr;
  int pending_ = 0;
};

}  // namespace sy::net
