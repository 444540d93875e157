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
#include "proxy/server/client_side.h"
#include "proxy/server/proxy_stream.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/upstream_conn.h"

namespace sy::server {

class H2Session;

class DownstreamConn final : public ClientSide {
 public:

  // Accepts one pending connection on `server` (`status` < 0: the accept failed), unless the
  // worker is at its share of max_connections: then the listener waits (Worker::paused_listeners).
  static void accept(Worker& w, uv_stream_t* server, int status = 0);
  // Shutdown: close now if idle, else after the exchange in progress.
  void shutdown();
  // A reload published a new config (Worker::config_reloaded): HTTP/2 gets GOAWAY.
  void config_reloaded();
  // Shutdown timeout: close at once, whatever is in flight. A request whose answer has not begun
  // gets 503 shutting_down with Connection: close first (best effort: one non-blocking write);
  // every request cut here gets its access-log line.
  void close_now();

  DownstreamConn* prev = nullptr;  // Worker::conns list
  DownstreamConn* next = nullptr;

 private:
  friend class ProxyStream;  // asks for reading, writing, timers and closing
  friend class H2Session;    // the HTTP/2 codec, once the connection speaks it
  friend class H2Stream;

  explicit DownstreamConn(Worker& w);
  ~DownstreamConn();

  // libuv
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_client_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_gone(void* owner);
  static void on_shutdown(void* owner, int status);
  static void on_tls(void* owner, bool ok);

  // ClientSide
  void start_reading() override;
  void stop_reading() override;
  void process_input() override;  // parse what is in the read buffer, as far as the state allows
  bool keep_alive() const override { return parser_.keep_alive(); }
  net::ReadBuffer* h1_input() override { return &sock_.rbuf; }
  void out_interim(const http::MessageHead& head, http::ResponseForward& f) override;
  void out_head(const http::MessageHead& head, http::ResponseForward& f) override;
  void out_body(const char* p, size_t n) override;
  void out_trailers(const http::MessageHead& head, size_t first) override;
  void out_end() override;
  bool out_error(int status, std::string_view code, std::string_view message, std::string_view extra,
                 int grpc_status) override;
  bool out_begun() const override;
  int flush_client() override;      // OutBatch result
  void finish_exchange() override;  // response fully written: keep-alive, linger or close
  void close() override;
  void arm(int64_t ms) override;
  using ClientSide::arm;
  const net::TlsSession* tls() const override { return sock_.tls(); }
  std::string_view protocol() const override;

  void stop_reading_now();
  void reset_for_next();
  void go_idle();
  void linger_close();
  void check_body_timeout();
  // The first bytes (or ALPN) say HTTP/2: true once the connection belongs to its H2Session (or
  // is waiting for the rest of a preface), false to go on with HTTP/1.1.
  bool maybe_http2();
  // Between exchanges: the latest snapshot's config, if a reload replaced the one held.
  void follow_config();

  Worker& w_;
  net::TcpConn sock_;  // socket, timer and read buffer, closed together
  http::Parser parser_;
  const net::TlsServerConfig* tls_ = nullptr;  // the listener's (kept alive by sock_'s TLS layer)
  bool in_process_ = false;
  bool http2_allowed_ = false;  // the listener serves HTTP/2 and no HTTP/1.1 request came yet
  bool quiet_due_ = false;      // idle over TLS: the idle timer's first run trims TLS's buffers
  std::unique_ptr<H2Session> h2_;
  ProxyStream stream_{w_, *this};  // the exchange in progress (or the next one's, reset)
};

}  // namespace sy::server
