// The socket, timer and read buffer every connection object holds (client, upstream — so also
// HTTP probes —, admin, etcd connections): reading into a pooled buffer taken only while bytes are
// in flight, the lazy read stop, discarding input, the lingering close's first step (FIN), and the
// one way to end a connection: close both handles, then — once both close callbacks have run —
// tell the owner it may free itself. A member of its owner, not a base class: each owner keeps
// its own state machine, and both handles' `data` point to the owner, so libuv callbacks reach it
// directly.
//
// TLS is a layer of this primitive (start_tls): ciphertext is read into a buffer of its own and
// decrypted into `rbuf`, and OutBatch::flush(TcpConn&) encrypts what it sends, so every owner reads
// and writes plaintext exactly as on a plain socket (tcp_conn.cc).
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cerrno>
#include <cstddef>
#include <memory>
#include <string_view>

#include "proxy/net/assert.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/net/close.h"

namespace sy::net {

class TlsSession;
struct TlsLayer;

struct TcpConn {
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  // Bytes read and not consumed yet. The owner consumes by advancing rbuf.start; its read
  // callback sees the new bytes at the end of [start, end).
  ReadBuffer rbuf;

  // Called once, after both handles are closed: the owner deletes itself there.
  using Gone = void (*)(void* owner);
  // The owner's read callback, as libuv's (stream->data is the owner): n > 0 bytes were added at
  // the end of rbuf (nothing is kept while discarding); n < 0 the end or an error (UV_ENOBUFS: no
  // memory for a buffer). Never called with n == 0.
  using OnRead = void (*)(uv_stream_t* s, ssize_t n);

  void init(uv_loop_t* loop, void* owner, BufferPool& buffers) {
    owner_ = owner;
    buffers_ = &buffers;
    uv_tcp_init(loop, &tcp);
    uv_timer_init(loop, &timer);
    tcp.data = timer.data = owner;
  }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
  void arm(uint64_t ms, uv_timer_cb cb) { uv_timer_start(&timer, cb, ms, 0); }
  void disarm() { uv_timer_stop(&timer); }
  bool closing() const { return pending_ > 0; }

  // ---- reading ----

  // Bytes are welcome: arms libuv unless it is armed already (a lazy stop left it so).
  void read_start(OnRead cb) {
    on_read_ = cb;
    wanted_ = true;
    if (tls_) tls_resume();  // plaintext the session holds comes without a socket event
    if (armed_ || pending_ > 0) return;
    if (uv_read_start(stream(), alloc_cb, read_cb) == 0) armed_ = true;
  }
  // Lazy stop: bytes are not welcome now, but the socket stays armed in libuv, so a peer that
  // waits for its answer costs no epoll_ctl now and none when reading resumes (two syscalls per
  // keep-alive request otherwise). Should bytes arrive meanwhile, they are left in the kernel and
  // reading stops for real then.
  void read_pause() { wanted_ = false; }
  // Stops at once (backpressure that must hold, a half-closed peer).
  void read_stop() {
    wanted_ = false;
    if (!armed_) return;
    uv_read_stop(stream());
    armed_ = false;
  }
  bool read_wanted() const { return wanted_; }
  // Input from now on is read and thrown away (lingering close; an idle pooled connection, whose
  // any byte or EOF means "close it"). The owner may drop_buffer() once nothing refers into it.
  void discard() { discard_ = true; }
  void keep() { discard_ = false; }
  // One read straight from the socket, before libuv watches it: a request usually arrives with
  // its connection, and reading it at once (as HAProxy does) saves registering the socket with
  // epoll and a loop turn. Delivers what came to the read callback; false when nothing was there.
  bool read_now(OnRead cb) {
    if (tls_) return tls_read_now(cb);
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp), &fd) != 0) return false;
    if (!take_buffer()) return false;
    ssize_t n;
    do {
      n = ::recv(fd, rbuf.data + rbuf.end, rbuf.space(), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {  // EAGAIN; or end/error, which libuv's own read then reports
      if (rbuf.pending() == 0) drop_buffer();
      return false;
    }
    on_read_ = cb;
    wanted_ = true;
    rbuf.end += static_cast<size_t>(n);
    cb(stream(), n);
    return true;
  }
  // Gives the read buffer back when it holds nothing (an idle connection costs no buffer), and
  // over TLS what the session holds between records (OpenSSL's record buffers, output storage).
  void release_if_empty() {
    release_buffer_if_empty();
    if (tls_) tls_trim(4096);  // (a small output string is kept: it is reused by the next response)
  }
  // The read buffer only: a client connection between two keep-alive requests keeps its TLS
  // record buffers until it has been quiet a while (trim_tls), or every request would free and
  // allocate OpenSSL's 16 KiB buffers again.
  void release_buffer_if_empty() {
    if (rbuf.data && rbuf.pending() == 0) drop_buffer();
  }
  // Over TLS: everything the session holds between records goes back (OpenSSL's record buffers,
  // the ciphertext buffers, the output storage whatever its size). For a connection gone quiet.
  void trim_tls() {
    if (tls_) tls_trim(0);
  }
  void drop_buffer() {
    if (rbuf.data) buffers_->release(rbuf.data);
    rbuf = {};
  }

  // ---- closing ----

  // Idempotent. The read buffer goes back to the pool with the last close callback, not here: a
  // parser may still be walking it up the stack.
  void close(Gone gone) {
    if (pending_ > 0) return;
    gone_ = gone;
    pending_ = 2;
    armed_ = wanted_ = false;
    if (tls_) tls_close();  // close_notify (best effort), and its own timer: one more callback
    uv_timer_stop(&timer);
    close_socket(reinterpret_cast<uv_handle_t*>(&tcp), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_closed);
  }

  // Lingering close, first step: send FIN once queued writes are out; the owner keeps reading
  // (discard()) until the peer closes or its linger timer runs out. `cb` runs once (status < 0:
  // the FIN could not go; UV_ECANCELED when the connection closes first). False: the shutdown
  // could not start (close instead). The request is allocated here, not held by every
  // connection: only a lingering one needs it (80 bytes off each idle keep-alive client).
  using Shut = void (*)(void* owner, int status);
  bool shutdown_write(Shut cb) {
    if (tls_) tls_close_notify();  // the alert goes out before the FIN
    auto* req = new uv_shutdown_t;
    req->data = this;
    shut_ = cb;
    if (uv_shutdown(req, stream(), shutdown_cb) == 0) return true;
    delete req;
    return false;
  }

  // ---- writing (besides OutBatch::flush(TcpConn&), the request path's) ----

  // One write whose callback always runs (status < 0: it failed); `bufs` stay valid until then.
  // On a TLS connection the bytes are encrypted first; one such write in flight at a time.
  int write(uv_write_t* req, const uv_buf_t* bufs, unsigned n, uv_write_cb cb);
  // Queues a copy of `bytes`, nobody waiting for it (a request to etcd, a last answer before a
  // close). false: the socket refused at once.
  bool send(std::string_view bytes);

  // ---- TLS ----

  // Called once per connection when the handshake ends: ok, or failed (session's error() says why).
  using TlsEvent = void (*)(void* owner, bool ok);
  // Makes this a TLS connection (before any byte is read; a client session's ClientHello goes out
  // at once). `keep` holds what the session's callbacks point into (the listener's certificates)
  // for as long as the connection lives.
  void start_tls(std::unique_ptr<TlsSession> session, std::shared_ptr<const void> keep, TlsEvent ev);
  TlsSession* tls() const;
  // Writes bytes past TLS, straight to the socket, best effort (the plain-text 400 to a client that
  // spoke plain HTTP to a TLS port).
  void write_raw(std::string_view bytes);
  // OutBatch's path on a TLS connection: encrypts `bufs`, then writes as OutBatch::flush does
  // (kDone, kPending with `cb` run later through `req`, or a libuv error).
  int tls_flush(const uv_buf_t* bufs, size_t n, uv_write_t* req, uv_write_cb cb, void* data);

  // Internal (public only so that the struct stays standard-layout for offsetof).
  static TcpConn* of(uv_handle_t* h) {
    const size_t off = h->type == UV_TCP ? offsetof(TcpConn, tcp) : offsetof(TcpConn, timer);
    return reinterpret_cast<TcpConn*>(reinterpret_cast<char*>(h) - off);
  }
  static void on_closed(uv_handle_t* h) { of(h)->closed_one(); }
  void closed_one() {
    SY_ASSERT(pending_ > 0);  // two handles (three with TLS), one close callback each
    if (--pending_ > 0) return;
    drop_buffer();
    if (tls_) tls_free();
    gone_(owner_);
  }
  bool take_buffer() {
    if (!rbuf.data && !(rbuf.data = buffers_->acquire())) return false;
    rbuf.compact();  // before every read: owners only advance rbuf.start, never rewind it
    return true;
  }
  static void shutdown_cb(uv_shutdown_t* req, int status) {
    // (libuv calls it before the close callbacks when the connection closes first.)
    auto* c = static_cast<TcpConn*>(req->data);
    delete req;
    c->shut_(c->owner_, status);
  }
  static void alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
    // Input nobody keeps: a small shared sink (one per thread; read callbacks never overlap).
    thread_local char sink[4096];
    TcpConn* c = of(h);
    if (c->discard_) *buf = uv_buf_init(sink, sizeof sink);
    else if (c->tls_) c->tls_alloc(buf);
    else if (!c->wanted_ || !c->take_buffer()) *buf = uv_buf_init(nullptr, 0);  // read_cb gets UV_ENOBUFS
    else *buf = uv_buf_init(c->rbuf.data + c->rbuf.end, static_cast<unsigned>(c->rbuf.space()));
  }
  static void read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t*) {
    TcpConn* c = of(reinterpret_cast<uv_handle_t*>(s));
    if (n == 0 || c->pending_ > 0) return;
    if (c->tls_ && !c->discard_) {
      c->tls_read(n);
      return;
    }
    if (n == UV_ENOBUFS && !c->wanted_ && !c->discard_) {
      c->read_stop();  // a lazy stop meeting bytes: they stay in the kernel until read_start()
      return;
    }
    if (n > 0 && !c->discard_) c->rbuf.end += static_cast<size_t>(n);
    c->on_read_(s, n);
  }

  BufferPool* buffers_ = nullptr;
  OnRead on_read_ = nullptr;
  Shut shut_ = nullptr;
  void* owner_ = nullptr;
  Gone gone_ = nullptr;
  int pending_ = 0;     // close callbacks still to come
  bool armed_ = false;  // uv_read_start in effect
  bool wanted_ = false;
  bool discard_ = false;
  TlsLayer* tls_ = nullptr;  // set by start_tls (tcp_conn.cc)

  // TLS internals (tcp_conn.cc).
  void tls_alloc(uv_buf_t* buf);
  void tls_read(ssize_t n);
  bool tls_read_now(OnRead cb);
  void tls_pump();
  void tls_deliver(ssize_t n);
  bool tls_send_output();
  void tls_resume();
  void tls_trim(size_t keep);  // output storage up to `keep` bytes stays
  void tls_close_notify();
  void tls_close();
  void tls_free();
};

}  // namespace sy::net
