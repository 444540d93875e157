// One HTTP/1.1 keep-alive connection to an etcd member's JSON gateway (/v3/...), on the caller's
// libuv loop. Requests are POSTs written as they come (pipelined; the gateway answers in order).
// A unary call's body is delivered whole; a streaming call (watch, keepalive) delivers each
// newline-delimited JSON message as it arrives. No retries here: any failure (connect, timeout,
// malformed response, peer close) answers every pending call with the error and marks the
// connection broken; the etcd client decides where to go next.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

#include "conf/units.h"
#include "proxy/http/parser.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/net/tls_config.h"

namespace sy::registry::etcd {

class HttpConn {
 public:
  // `error` is empty when an answer arrived (any status); else it says what went wrong.
  using Done = std::function<void(int status, std::string body, const std::string& error)>;
  using Line = std::function<void(std::string_view message)>;
  using Broken = std::function<void(HttpConn*)>;

  // Starts connecting. The object deletes itself after close(); callers keep a raw pointer.
  // `tls` (registry.etcd.tls, https:// endpoints): the handshake is part of connecting; requests
  // queue until it is done.
  static HttpConn* open(uv_loop_t* loop, const conf::Address& to, uint64_t timeout_ms, Broken on_broken,
                        std::shared_ptr<const net::TlsClientConfig> tls = nullptr);

  // Calls on a broken connection are answered at once with the error.
  // A unary call: `timeout_ms` bounds the whole exchange, connect included.
  void post(std::string_view path, std::string body, Done done);
  // A streaming call: messages go to `line` as they arrive; `end` is told when the stream ends
  // (or fails). The timeout covers only the connect and the response head: a watch may be silent
  // for as long as nothing changes.
  // `headers`: extra request header lines, each ending in "\r\n".
  void stream(std::string_view path, std::string body, Line line, Done end, std::string_view headers = {});

  // Answers pending calls with "closed" (unless `quiet`), then releases the socket and itself.
  void close(bool quiet = false);
  bool broken() const { return broken_; }
  size_t pending() const { return calls_.size(); }
  const conf::Address& peer() const { return to_; }

 private:
  struct Call {
    Done done;
    Line line;  // set: streaming
    bool head_seen = false;
    uint64_t deadline_ms = 0;
  };
  HttpConn(uv_loop_t* loop, const conf::Address& to, uint64_t timeout_ms, Broken on_broken);
  ~HttpConn() = default;
  void enqueue(std::string_view path, std::string body, Call call, std::string_view headers = {});
  void write(std::string bytes);
  void fail(const std::string& why);
  void arm_timer();
  static void on_connect(uv_connect_t* req, int status);
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_timer(uv_timer_t* t);
  static void on_gone(void* owner);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, size_t n);
  static int on_message_complete(llhttp_t* p);

  uv_loop_t* loop_;
  conf::Address to_;
  uint64_t timeout_ms_;
  Broken on_broken_;
  std::shared_ptr<const net::TlsClientConfig> tls_;
  net::TcpConn sock_;  // socket, timer and read buffer, closed together
  uv_connect_t connect_req_{};
  bool connected_ = false;
  bool broken_ = false;
  bool closing_ = false;
  std::string unsent_;  // written once connected
  std::deque<Call> calls_;
  http::Parser parser_;
  llhttp_settings_t settings_{};
  int status_ = 0;
  std::string body_;  // the current response's body (unary) or the partial line (streaming)
};

}  // namespace sy::registry::etcd
