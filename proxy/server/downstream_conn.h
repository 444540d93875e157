// One client connection: parses requests (llhttp), routes them, forwards each to an upstream
// connection and streams the response back. HTTP/1.1 keep-alive and pipelining (one exchange at
// a time; pipelined requests wait, unparsed, in the read buffer), bodies streamed both ways with
// backpressure, 1xx, Upgrade tunnels, and the proxy's own error responses.
//
// Threading: lives on its worker's loop only.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <memory>
#include <string>

#include "proxy/http/head.h"
#include "proxy/http/parser.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/net/out_batch.h"
#include "proxy/server/slot.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/upstream_conn.h"

namespace sy::server {

class DownstreamConn final : public upstream::UpstreamOwner {
 public:
  enum class State {
    kIdle,         // between requests: no bytes of the next one yet; idle (or first-request
                   // header) timer armed; no read buffer held
    kReadingHead,  // a request head is arriving; header timer armed
    kConnecting,   // head parsed; an upstream connection is being made; client reads stopped
    kForwarding,   // request body going up and/or response coming down
    kTunnel,       // after a 101: raw bytes both ways
    kLingering,    // last response written, write side shut down; reading and discarding what
                   // the client still sends (so it gets our answer, not a reset); linger timer
    kClosed,       // uv_close issued; freed in the close callback
  };

  // Accepts one pending connection on `server` (`status` < 0: the accept failed), unless the
  // worker is at its share of max_connections: then the listener waits (Worker::paused_listeners).
  static void accept(Worker& w, uv_stream_t* server, int status = 0);
  // Shutdown: close now if idle, else after the exchange in progress.
  void shutdown();
  // Shutdown timeout: close at once, whatever is in flight. A request whose answer has not begun
  // gets 503 shutting_down with Connection: close first (best effort: one non-blocking write);
  // every request cut here gets its access-log line.
  void close_now();

  // A request body up to this size is kept while it streams, so a retry can send it again.
  static constexpr size_t kReplayLimit = 64 * 1024;

  DownstreamConn* prev = nullptr;  // Worker::conns list
  DownstreamConn* next = nullptr;

 private:
  explicit DownstreamConn(Worker& w);
  ~DownstreamConn() override;

  // libuv
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_client_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_gone(void* owner);

  // llhttp (request parser)
  static const llhttp_settings_t* settings();
  static int cb_message_begin(llhttp_t* p);
  static int cb_url(llhttp_t* p, const char* at, size_t n);
  static int cb_header_field(llhttp_t* p, const char* at, size_t n);
  static int cb_header_value(llhttp_t* p, const char* at, size_t n);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, size_t n);
  static int cb_message_complete(llhttp_t* p);

  // UpstreamOwner
  void on_upstream_connected(upstream::UpstreamConn* c) override;
  void on_upstream_head(upstream::UpstreamConn* c, const http::MessageHead& head) override;
  void on_upstream_body(upstream::UpstreamConn* c, const char* p, size_t n) override;
  void on_upstream_complete(upstream::UpstreamConn* c) override;
  bool on_upstream_read_done(upstream::UpstreamConn* c) override;
  void on_upstream_error(upstream::UpstreamConn* c, upstream::UpstreamError e) override;
  void on_upstream_drained(upstream::UpstreamConn* c) override;

  void start_reading();
  void stop_reading();
  void stop_reading_now();
  void process_input();       // parse what is in the read buffer, as far as the state allows
  void begin_exchange();      // a request head is complete: route, limits, first attempt
  void start_attempt();       // pick an instance (not tried yet) and connect
  void connect_upstream(bool fresh);
  void report_outcome(health::Outcome o);  // once per attempt: breaker, outlier detection
  void release_attempt();     // the attempt's in-flight counters
  void release_exchange();    // the exchange's service counters
  // May the failed attempt be tried again? `named`: retry.on names what happened;
  // `connect_failure`: it reached no backend (not budgeted).
  bool should_retry(bool named, bool connect_failure) const;
  void schedule_retry();
  void fail_attempt(upstream::UpstreamError e);
  bool request_hash(uint64_t& out) const;  // the hash_on key of this request, if present
  void send_request_head();
  void flush_upstream();
  int flush_client();         // OutBatch result
  void finish_exchange();     // response fully written: release upstream, next request
  void reset_for_next();
  void go_idle();
  void take_exchange();  // x_ from the worker's pool, if not held yet
  void send_error(int status, const char* code, const std::string& message, bool close);
  void abort_exchange();      // mid-response failure: drop both connections
  void close();
  void linger_close();
  static void on_shutdown(uv_shutdown_t* req, int status);
  void arm(int64_t ms);
  void check_body_timeout();
  conf::Millis try_timeout() const;
  void record(const char* error);

  Worker& w_;
  net::TcpConn sock_;  // socket, timer and read buffer, closed together
  http::Parser parser_;
  State state_ = State::kIdle;
  int64_t body_quiet_since_ms_ = 0;  // last client read, or when we last became willing to read

  std::unique_ptr<Exchange> x_;  // while a request is in progress (see Exchange)
  std::string client_ip_;

  // One exchange's state: a new exchange starts from `s_ = {}` (reset_for_next), never from a
  // field-by-field reset. Declared before the limit slots, whose counters `table` pins.
  struct Stream {
    std::shared_ptr<const RoutingTable> table;  // pins endpoints for this exchange
    const Upstreams* upstreams = nullptr;
    const Endpoint* endpoint = nullptr;
    http::Framing req_framing = http::Framing::kNone;
    http::Framing resp_framing = http::Framing::kNone;
    uint64_t req_content_length = 0;
    uint64_t body_in = 0;      // request body bytes received
    uint64_t bytes_out = 0;    // response bytes sent to the client
    int status = 0;
    int attempts = 0;
    int error_status = 0;      // set by parser callbacks for 413/414/431
    bool head_done = false;
    bool request_done = false;
    bool response_started = false;
    bool response_done = false;
    bool upgrade = false;       // the request asks for a protocol upgrade
    bool is_head = false;
    bool idempotent = false;
    bool keep_alive_10 = false;
    bool looped = false;        // the request carries this process's Via marker
    bool up_drained = true;     // nothing queued towards the upstream
    bool paused_at_head = false;
    bool paused_at_end = false;
    health::ServiceRuntime* srt = nullptr;         // pinned by table_
    uint64_t tried_mask = 0;                       // endpoints (index < 64) already tried
    bool replayable = false;
    bool head_sent = false;        // bytes of this request reached an upstream
    bool outcome_reported = false;
    bool discarding = false;       // reading a retryable response to throw it away
    bool discard_done = false;
    bool backoff = false;          // waiting out the retry backoff (state kConnecting)
    bool stale_retried = false;    // re-sent once after a pooled connection died under it
    bool message_begun = false;  // bytes of a request head have been parsed
    const char* error_code = nullptr;
  };
  Stream s_;
  std::shared_ptr<const conf::Config> cfg_;
  upstream::UpstreamConn* up_ = nullptr;
  uint64_t started_ns_ = 0;
  bool close_after_ = false;   // close once the current response is written
  // Attempts and retries (issue 4).
  health::InstanceRuntime* rt_ = nullptr;         // the current attempt's instance (pinned by table_
                                                  // through endpoint_->runtime: no copy per attempt)
  int64_t attempt_started_ns_ = 0;                // request head sent (latency for ewma)
  // Limit slots (declared after table_, which pins the counters they point into).
  Slot request_slot_;  // srt_->active_requests: this exchange
  Slot pending_slot_;  // srt_->pending: this attempt, until its upstream connection is up
  Slot retry_slot_;    // srt_->active_retries: this attempt is a budgeted retry
  bool in_process_ = false;
};

}  // namespace sy::server
