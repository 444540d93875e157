// One client connection: accept, reading and the request parser (llhttp), HTTP/1.1 keep-alive and
// pipelining (one exchange at a time; pipelined requests wait, unparsed, in the read buffer), the
// client-side timeouts, writing to the client, lingering close, shutdown, Upgrade tunnels' client
// side. Each exchange — route, attempts, relaying the response — is its ProxyStream's
// (proxy_stream.h). (HAProxy's h1c, Envoy's ConnectionManagerImpl.)
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
#include "proxy/server/proxy_stream.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/upstream_conn.h"

namespace sy::server {

class DownstreamConn final {
 public:
  enum class State {
    kIdle,         // between requests: no bytes of the next one yet; idle (or first-request
                   // header) timer armed; no read buffer held
    kReadingHead,  // a request head is arriving; header timer armed
    kConnecting,   // head parsed; an upstream connection is being made (or a retry backoff runs
                   // out); client reads stopped
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

  DownstreamConn* prev = nullptr;  // Worker::conns list
  DownstreamConn* next = nullptr;

 private:
  friend class ProxyStream;  // asks for reading, writing, timers and closing

  explicit DownstreamConn(Worker& w);
  ~DownstreamConn() = default;

  // libuv
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_client_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_gone(void* owner);
  static void on_shutdown(void* owner, int status);
  static void on_tls(void* owner, bool ok);

  void start_reading();
  void stop_reading();
  void stop_reading_now();
  void process_input();       // parse what is in the read buffer, as far as the state allows
  int flush_client();         // OutBatch result
  void finish_exchange();     // response fully written: keep-alive, linger or close
  void reset_for_next();
  void go_idle();
  void close();
  void linger_close();
  void arm(int64_t ms);
  void arm(conf::Millis t) { arm(t.count()); }
  void check_body_timeout();

  Worker& w_;
  net::TcpConn sock_;  // socket, timer and read buffer, closed together
  http::Parser parser_;
  State state_ = State::kIdle;
  int64_t body_quiet_since_ms_ = 0;  // last client read, or when we last became willing to read
  std::string client_ip_;
  const net::TlsServerConfig* tls_ = nullptr;  // the listener's (kept alive by sock_'s TLS layer)
  std::string client_cert_;  // X-Forwarded-Client-Cert of a verified client certificate
  std::shared_ptr<const conf::Config> cfg_;
  bool close_after_ = false;   // close once the current response is written
  bool in_process_ = false;
  ProxyStream stream_{w_, *this};  // the exchange in progress (or the next one's, reset)
};

}  // namespace sy::server
