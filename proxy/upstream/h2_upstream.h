// HTTP/2 to instances (`services.X.protocol: h2c`): one nghttp2 client session per connection
// (H2Upstream), each exchange one of its streams (H2Exchange, the HTTP/2 codec behind
// upstream::Exchange). A connection carries up to the instance's SETTINGS_MAX_CONCURRENT_STREAMS
// exchanges at once; the per-loop H2Pool keeps, per instance, the connections, and a second one is
// opened only when the first is full or going away (GOAWAY). Streams the instance refused or that
// lay above a GOAWAY's last stream id end with kRefused (never processed: retried). Response DATA
// is handed to the owner as it arrives and given back to the instance's window
// (nghttp2_session_consume) only once the owner flushed it, so the windows bound memory end to end.
//
// Threading: lives on one loop; every method and callback runs on that loop.
#pragma once

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "conf/units.h"
#include "proxy/http/head.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/net/out_batch.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/upstream/exchange.h"

namespace sy::upstream {

class H2Upstream;
class H2Pool;

// The receive windows this side announces (the top-level http2: settings).
struct H2Windows {
  uint32_t stream = 64 * 1024;
  uint32_t connection = 1024 * 1024;
};

class H2Exchange final : public Exchange {
 public:
  void send_head(const http::MessageHead& req, const http::RequestForward& f) override;
  void send_body(const char* p, size_t n, bool copy) override;
  void send_end(std::string_view trailer_lines) override;
  void send_raw(const char*, size_t) override {}  // (no tunnels over HTTP/2 to instances)
  bool has_output() const override { return has_output_; }
  bool write_pending() const override { return waiting_drain_; }
  void write() override;
  void expect_response(bool head_request, conf::Millis idle_timeout) override;
  void request_sent(conf::Millis response_timeout) override;
  void pause_reading() override { paused_ = true; }
  void resume_reading() override;
  void start_tunnel() override {}
  bool response_length(uint64_t& n) const override;
  void release(Pool& pool, conf::Millis idle_timeout) override;
  void close() override;
  bool reused() const override { return reused_; }
  bool response_started() const override { return head_given_; }

 private:
  friend class H2Upstream;
  H2Exchange(H2Upstream* c, UpstreamOwner* o) : conn_(c), owner_(o) {}
  ~H2Exchange() = default;

  void deliver();               // hands what arrived to the owner (outside the library's callbacks)
  void consume_delivered();     // the owner flushed it: the instance may send that much again
  void end_for_owner();         // the owner is done with it (release, close, error)
  void resume_body();           // a deferred data source takes the bytes (or end) queued since
  void fail(UpstreamError e);   // error to the owner, stream reset
  bool ready_to_end() const { return end_queued_ && body_off_ == body_.size(); }

  H2Upstream* conn_;
  UpstreamOwner* owner_;
  int32_t id_ = -1;  // the stream, once the head was submitted
  // ---- the request ----
  std::string body_;  // bytes not yet taken into DATA frames (from body_off_ on)
  size_t body_off_ = 0;
  uint64_t length_left_ = 0;   // a Content-Length body: bytes still to come (its end ends the stream)
  std::string trailer_lines_;  // sent as a trailing HEADERS frame
  bool length_framed_ = false;
  bool end_queued_ = false;    // no more body bytes come
  bool deferred_ = false;      // the data source said "nothing yet": resume it when bytes come
  bool has_output_ = false;
  bool waiting_drain_ = false;
  // ---- the response ----
  http::MessageHead head_;      // the response head (1xx heads pass through it too)
  http::MessageHead trailers_;  // the trailing HEADERS frame's fields
  std::string incoming_;        // DATA received and not yet handed over
  std::string delivered_;       // DATA handed over, not yet flushed by the owner (it refers to it)
  uint64_t length_ = 0;
  bool has_length_ = false;
  bool head_in_ = false, head_given_ = false;
  bool head_ended_ = false;  // the response head came with END_STREAM
  bool in_trailers_ = false;
  bool ended_ = false, end_given_ = false;  // END_STREAM received / complete reported
  bool paused_ = false;
  bool errored_ = false;
  UpstreamError error_ = UpstreamError::kReset;
  bool dirty_ = false;           // something to deliver after this read
  bool stream_closed_ = false;   // the library is done with the stream (or never had it)
  bool owner_done_ = false;      // released, closed, or told of an error
  bool reused_ = false;
  int64_t idle_ms_ = 60000;
  int64_t response_deadline_ms_ = INT64_MAX;
  int64_t last_read_ms_ = 0;
  H2Exchange* prev = nullptr;
  H2Exchange* next = nullptr;
};

class H2Upstream {
 public:
  enum class State {
    kConnecting,  // TCP connect in progress; connect timer armed
    kReady,       // streams may be opened
    kDraining,    // GOAWAY received: no new stream; closed when the last one ends
    kClosed,      // uv_close issued; freed (with its exchanges) in the close callback
  };
  // Starts a connection (see UpstreamConn::connect for `open_count` and `error`). With `tls`
  // (services.X.protocol: h2) the handshake offers ALPN "h2" only and is part of connecting: an
  // instance that does not select h2 fails the connection as a TLS failure, as Envoy does.
  static H2Upstream* connect(uv_loop_t* loop, net::BufferPool& buffers, const conf::Address& addr, uint64_t uid,
                             conf::Millis connect_timeout, H2Windows windows,
                             std::shared_ptr<std::atomic<uint32_t>> open_count, int* error, TlsTarget* tls = nullptr);
  // A new exchange on this connection. Its owner hears on_upstream_connected once the connection
  // is up; when ready() already, the owner sends its head at once instead.
  H2Exchange* open(UpstreamOwner* owner);
  bool ready() const { return state_ == State::kReady; }
  // May it take one more exchange (connecting or ready, below the instance's stream limit)?
  bool has_room() const;
  uint64_t uid() const { return uid_; }
  size_t active() const { return active_; }
  // Made with this TLS context and name (both null/empty: plain h2c)? Streams for another name
  // (another Host verified) need a connection of their own.
  bool serves(const net::TlsClientConfig* cfg, std::string_view name) const {
    if (!tls_) return cfg == nullptr;
    return tls_->cfg.get() == cfg && tls_->name == name;
  }
  // Ends the connection; every exchange still owned hears `e`.
  void close(UpstreamError e = UpstreamError::kReset);
  // Its instance left: no new exchange; closed once the ones in flight ended (GOAWAY sent).
  void retire();

 private:
  friend class H2Exchange;
  friend class H2Pool;
  H2Upstream(uv_loop_t* loop, net::BufferPool& buffers);
  ~H2Upstream();

  static void on_connect(uv_connect_t* req, int status);
  static void on_tls(void* self, bool ok);
  void connected();  // TCP (and TLS) up: the session starts, waiting exchanges send their heads
  void tls_failed(const std::string& why);
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_gone(void* self);
  bool start_session();
  void send();
  void dispatch();   // deliver() every exchange something arrived for, then free finished ones
  void reap();
  void rearm();      // the one timer: the earliest response deadline, body stall or idle close
  void mark(H2Exchange* x);
  // mark(x), delivered from the loop at once (0 ms timer), not inside the caller's call: it may be
  // the exchange's owner, flushing.
  void deliver_soon(H2Exchange* x);
  void stream_ended(H2Exchange* x);

  static int cb_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* self);
  static int cb_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                       const uint8_t* value, size_t valuelen, uint8_t flags, void* self);
  static int cb_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* self);
  static int cb_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data, size_t len, void* self);
  static int cb_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void* self);
  static ssize_t cb_read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                              nghttp2_data_source* src, void* self);

  net::TcpConn sock_;
  uv_connect_t connect_req_{};
  std::unique_ptr<TlsTarget> tls_;  // null: h2c
  std::string tls_error_;           // why the handshake failed (given to every exchange)
  const char* tls_reason_ = "";
  nghttp2_session* s_ = nullptr;
  net::OutBatch out_;
  H2Windows windows_;
  H2Exchange* exchanges_ = nullptr;  // every exchange not freed yet
  std::vector<H2Exchange*> dirty_;
  size_t active_ = 0;                // exchanges whose stream is open or about to be
  H2Pool* pool_ = nullptr;
  std::shared_ptr<std::atomic<uint32_t>> open_count_;
  conf::Address address_;
  uint64_t uid_ = 0;
  State state_ = State::kConnecting;
  bool in_recv_ = false, send_after_recv_ = false, sending_ = false, again_ = false;
  bool served_ = false;              // an exchange was opened on it before
  int64_t pool_idle_ms_ = 60000;     // timeouts.idle of the last exchange released
  int64_t idle_since_ms_ = 0;        // when active_ fell to 0
  int64_t connect_timeout_ms_ = 0;

 public:
  H2Upstream* prev = nullptr;  // the pool's list per instance
  H2Upstream* next = nullptr;
};

// The HTTP/2 connections of one loop, per instance.
class H2Pool {
 public:
  H2Pool() = default;
  H2Pool(const H2Pool&) = delete;
  H2Pool& operator=(const H2Pool&) = delete;
  ~H2Pool() { close_all(); }

  // A connection to instance `uid` that can take one more exchange (made for TLS context `tls`
  // and name `name`; null/empty: h2c), or nullptr.
  H2Upstream* find(uint64_t uid, const net::TlsClientConfig* tls = nullptr, std::string_view name = {}) const;
  void add(H2Upstream* c);
  void remove(H2Upstream* c);  // (the connection closed)
  void close_all();
  // Retires the connections to instance `uid` (it is no longer probed or routed to): the cost is
  // that instance's connections, not the pool's size.
  void retire(uint64_t uid) {
    auto it = conns_.find(uid);
    if (it == conns_.end()) return;
    std::vector<H2Upstream*> doomed;
    for (H2Upstream* c = it->second; c; c = c->next) doomed.push_back(c);
    for (H2Upstream* c : doomed) c->retire();
  }
  template <typename Pred>
  void close_if(Pred dead) {
    std::vector<H2Upstream*> doomed;
    for (const auto& [uid, head] : conns_)
      if (dead(uid))
        for (H2Upstream* c = head; c; c = c->next) doomed.push_back(c);
    for (H2Upstream* c : doomed) c->retire();
  }
  size_t count() const { return count_; }

 private:
  std::unordered_map<uint64_t, H2Upstream*> conns_;
  size_t count_ = 0;
};

}  // namespace sy::upstream
