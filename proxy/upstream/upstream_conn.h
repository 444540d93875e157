// One HTTP/1.1 connection to a backend instance: connect, send a request head and body handed in
// by its owner (framed here: Content-Length as it is, chunked re-framed), parse the response with
// llhttp and stream it to the owner. The HTTP/1.1 codec behind upstream::Exchange: the exchange is
// the connection. Idle connections wait in the Pool. Used by the proxy (server/) and by health
// probes.
//
// Threading: lives on one loop; every method and callback runs on that loop.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "conf/units.h"
#include "proxy/http/head.h"
#include "proxy/http/parser.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/net/out_batch.h"
#include "proxy/net/tls_config.h"
#include "proxy/upstream/exchange.h"

namespace sy::upstream {

class Pool;

class UpstreamConn final : public Exchange {
 public:
  enum class State {
    kConnecting,  // TCP connect in progress; connect timer armed
    kActive,      // owned by a request: writing the request and/or reading its response
    kTunnel,      // after a 101: raw bytes, no parsing
    kIdle,        // in its Pool, watched for the backend closing it; idle timer armed
    kClosed,      // uv_close issued; freed in the close callback
  };

  // Starts a connection; the owner hears on_upstream_connected or on_upstream_error.
  // `open_count`, when given, is incremented now and decremented when the connection closes
  // (a service's max_connections limit counts through it). Returns nullptr when the connection
  // could not even be started; `*error` then holds libuv's error (UV_EMFILE: the proxy is out of
  // file descriptors, which is no fault of the instance).
  static UpstreamConn* connect(uv_loop_t* loop, net::BufferPool& buffers, const conf::Address& addr,
                               uint64_t uid, conf::Millis connect_timeout, UpstreamOwner* owner,
                               std::shared_ptr<std::atomic<uint32_t>> open_count = nullptr, int* error = nullptr,
                               TlsTarget* tls = nullptr);
  // A pooled connection serves a request only with the same TLS (or none): the same context and
  // the same name verified.
  bool serves(const net::TlsClientConfig* cfg, std::string_view name) const {
    if (!tls_) return cfg == nullptr;
    return tls_->cfg.get() == cfg && tls_->name == name;
  }
  void attach(UpstreamOwner* owner);  // taken from the pool
  // Raw bytes to send (a health probe's own request): add to out() then call write().
  net::OutBatch& out() { return out_; }

  // Exchange
  void send_head(const http::MessageHead& req, const http::RequestForward& f) override;
  void send_body(const char* p, size_t n, bool copy) override;
  void send_end(std::string_view trailer_lines) override;
  void send_raw(const char* p, size_t n) override { out_.ref(p, n); }
  bool has_output() const override { return !out_.empty(); }
  bool write_pending() const override { return out_.pending(); }
  void write() override;
  void expect_response(bool head_request, conf::Millis idle_timeout) override;
  void request_sent(conf::Millis response_timeout) override;
  void pause_reading() override;
  void resume_reading() override;
  void start_tunnel() override;
  bool response_length(uint64_t& n) const override;
  // Back to its pool when the exchange ended cleanly, otherwise closed.
  void release(Pool& pool, conf::Millis idle_timeout) override;
  void close() override;
  bool reused() const override { return reused_; }
  bool response_started() const override { return response_started_; }

  State state() const { return state_; }
  bool reusable() const { return reusable_; }
  uint64_t uid() const { return uid_; }
  const llhttp_t& parser() const { return parser_.raw(); }
  const conf::Address& address() const { return address_; }

 private:
  friend class Pool;
  UpstreamConn(uv_loop_t* loop, net::BufferPool& buffers);
  ~UpstreamConn() = default;

  static void on_connect(uv_connect_t* req, int status);
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_gone(void* owner);
  static void on_tls(void* owner, bool ok);
  void connected();
  void tls_failed(const std::string& why);

  static const llhttp_settings_t* settings();
  static int cb_message_begin(llhttp_t* p);
  static int cb_status(llhttp_t* p, const char* at, size_t n);
  static int cb_header_field(llhttp_t* p, const char* at, size_t n);
  static int cb_header_value(llhttp_t* p, const char* at, size_t n);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, size_t n);
  static int cb_message_complete(llhttp_t* p);

  void parse();
  void fail(UpstreamError e);
  void arm(int64_t ms);

  net::TcpConn sock_;  // socket, timer and read buffer, closed together
  uv_connect_t connect_req_{};
  http::Parser parser_;
  http::MessageHead head_;
  size_t trailers_at_ = 0;  // head_'s fields from here on are the trailer section
  net::OutBatch out_;
  UpstreamOwner* owner_ = nullptr;
  Pool* pool_ = nullptr;
  std::unique_ptr<TlsTarget> tls_;  // null: plain
  std::shared_ptr<std::atomic<uint32_t>> open_count_;
  conf::Address address_;
  uint64_t uid_ = 0;
  State state_ = State::kConnecting;
  bool read_paused_ = false;
  bool head_request_ = false;
  bool response_started_ = false;
  bool response_done_ = false;
  bool reused_ = false;
  bool reusable_ = true;
  bool awaiting_head_ = false;
  bool chunked_ = false;  // the request body goes up re-framed as chunks (send_head's framing)
  int64_t idle_ms_ = 60000;
  int64_t last_read_ms_ = 0;
  int64_t deadline_ms_ = 0;
  int64_t response_deadline_ms_ = 0;  // the response head must have arrived by then (kNoDeadline:
                                      // the request is still being sent)
  int64_t write_since_ms_ = 0;        // when the write now pending was queued

 public:
  // Intrusive links for the pool's idle list.
  UpstreamConn* prev = nullptr;
  UpstreamConn* next = nullptr;
};

}  // namespace sy::upstream
