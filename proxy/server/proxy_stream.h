// One exchange on a client connection, from the first byte of a request head to the last byte of
// its response: decoding the request (the connection's parser calls back here), route, limits,
// attempts and retries (retry_state decides), the upstream connection's callbacks, relaying the
// response, the proxy's own error answers and the access-log record. (HAProxy's h1s, Envoy's
// ActiveStream and Router.) The connection (downstream_conn) owns the socket, reading, keep-alive,
// pipelining, timers and closing; the stream asks it for those through ClientSide (client_side.h),
// so the same exchange runs on an HTTP/2 stream (h2_session.h).
//
// A member of its connection, reused: the next exchange starts from `*s_ = {}` (reset()), never
// from a field-by-field reset. Its state, limit slots and working storage (Exchange) come from the
// worker's pool while a request is in progress, so an idle keep-alive connection holds only the
// stream's few pointers. Threading: its worker's loop only.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"
#include "proxy/server/client_side.h"
#include "proxy/server/exchange.h"
#include "proxy/server/slot.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/upstream_conn.h"

namespace sy::server {

class ProxyStream final : public upstream::UpstreamOwner {
 public:
  // A request body up to this size is kept while it streams, so a retry can send it again.
  static constexpr size_t kReplayLimit = 64 * 1024;

  ProxyStream(Worker& w, ClientSide& c) : w_(w), c_(c) {}
  ~ProxyStream() override;
  ProxyStream(const ProxyStream&) = delete;
  ProxyStream& operator=(const ProxyStream&) = delete;

  // The request parser's callbacks (llhttp_t::data is the stream).
  static const llhttp_settings_t* settings();

 private:
  friend class DownstreamConn;
  friend class H2Stream;
  friend class H2Session;

  // ---- storage and lifetime ----
  void take_storage();    // x_ from the worker's pool, if not held yet
  void give_storage();    // x_ back: the connection goes idle
  void reset();           // the next exchange on this connection: *s_ = {}

  // ---- request (llhttp) ----
  static int cb_message_begin(llhttp_t* p);
  static int cb_url(llhttp_t* p, const char* at, size_t n);
  static int cb_header_field(llhttp_t* p, const char* at, size_t n);
  static int cb_header_value(llhttp_t* p, const char* at, size_t n);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, size_t n);
  static int cb_message_complete(llhttp_t* p);
  int over_limit(int status, const char* why);  // -1, for the callback to return

  // ---- the exchange ----
  void begin();               // a request head is complete: route, limits, first attempt
  // The route's and the service's rate-limit policies (stream_rate_limit.cc). false: refused, the
  // 429 is on its way.
  bool admit_rate_limits(const RouteEntry* route);
  void start_attempt();       // pick an instance (not tried yet) and connect
  void connect_upstream(bool fresh);
  void connect_h2(bool fresh, upstream::TlsTarget& tls);
  bool admit_connection();
  void connect_refused(int err);
  bool request_hash(uint64_t& out) const;  // the hash_on key of this request, if present
  void report_outcome(health::Outcome o);  // once per attempt: breaker, outlier detection
  void report_grpc_outcome(int grpc_status);  // by circuit_breaker.on / outlier_detection.on
  void release_attempt();     // the attempt's in-flight counters
  void release_exchange();    // the exchange's service counters
  // May the failed attempt be tried again? `named`: retry.on names what happened;
  // `connect_failure`: it reached no backend (not budgeted); `grpc`: what retry.on named is a gRPC
  // status (a call may then go again whatever its method).
  bool should_retry(bool named, bool connect_failure, bool grpc = false) const;
  void schedule_retry();
  void on_backoff_over();     // the retry backoff ran out: next attempt
  void fail_attempt(upstream::UpstreamError e);
  void send_request_head();
  void flush_upstream();
  void relay_tunnel_input();  // client bytes after an upgrade go up as they are
  // The response timeout of this try: timeouts.response, retry.per_try_timeout, or what is left of
  // a gRPC call's grpc-timeout when that is shorter (then s_->try_by_deadline).
  conf::Millis try_timeout();
  bool deadline_passed() const;  // a gRPC call's grpc-timeout has run out
  int64_t elapsed_ms() const;    // since the request's first byte
  void drop_upstream();       // close the upstream connection, if any
  void hand_back_upstream(bool reusable);
  void finish();              // the response is out: record, counters back, upstream to the pool
  void send_error(int status, const char* code, const std::string& message, bool close);
  void abort();               // mid-response failure: drop both connections
  void record(const char* error);
  bool answered() const;      // bytes of a response went (or are going) to the client

  // UpstreamOwner
  void on_upstream_connected(upstream::Exchange* c) override;
  void on_upstream_head(upstream::Exchange* c, const http::MessageHead& head) override;
  void on_upstream_body(upstream::Exchange* c, const char* p, size_t n) override;
  void on_upstream_complete(upstream::Exchange* c) override;
  void on_upstream_trailers(upstream::Exchange* c, const http::MessageHead& head, size_t first) override;
  bool on_upstream_read_done(upstream::Exchange* c) override;
  void on_upstream_error(upstream::Exchange* c, upstream::UpstreamError e) override;
  void on_upstream_drained(upstream::Exchange* c) override;

  Worker& w_;
  ClientSide& c_;
  std::unique_ptr<Exchange> x_;  // while a request is in progress (see Exchange)

  // The exchange's state (x_->s, see Exchange): a new exchange starts from `*s_ = {}`. Only while
  // x_ is held, which is from a request's first byte until the connection goes idle (an HTTP/2
  // stream: its whole life).
  using ExchangeState = server::ExchangeState;
  ExchangeState* s_ = nullptr;
};

}  // namespace sy::server
