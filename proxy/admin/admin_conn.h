// The admin listener's connections: small HTTP/1.1 requests (bodies up to 1 MiB) parsed with
// llhttp and handed whole to an AdminHandler, which answers at once or later (long poll, or
// after the registry snapshot is on disk). Runs on the main loop.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "proxy/http/parser.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/net/tls_session.h"

namespace sy::admin {

// %XX decoded; `plus_is_space`: '+' is a space (query strings), else it stays '+' (paths).
std::string url_decode(std::string_view s, bool plus_is_space = true);

struct AdminRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // after '?', raw
  // The query split once, by key, %XX and '+' decoded, in order; a key without '=' has value "".
  std::vector<std::pair<std::string, std::string>> params;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string peer_ip;  // the client's address, without the port
  std::string header(const std::string& lower_name) const;
  // The first value of `name` ("" when absent or empty); has_param tells the two apart
  // (Consul's "?passing" is a key alone).
  std::string query_param(const std::string& name) const;
  bool has_param(const std::string& name) const;
  // Splits a raw query into params (called when the request line is read; tests call it too).
  void parse_query(std::string_view raw);
  std::string decoded_path() const;  // %XX decoded ("+" stays "+")
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

class AdminConn;

class AdminHandler {
 public:
  virtual ~AdminHandler() = default;
  // Must eventually call conn->respond() exactly once, unless forget(conn) is called first
  // (a second respond() for one request is an assertion failure).
  virtual void handle(AdminConn* conn, AdminRequest& req) = 0;
  // The connection is closing: drop any deferred answer to it.
  virtual void forget(AdminConn* conn) = 0;
};

// The client limits the admin listener shares with the proxy listener (client.*), and its own
// connection cap.
struct AdminLimits {
  uint64_t header_timeout_ms = 10000;  // first byte of a request → its head complete
  uint64_t idle_timeout_ms = 60000;    // a keep-alive connection between requests
  uint64_t body_timeout_ms = 60000;    // silence between two reads of a request body
  size_t max_connections = 256;        // beyond it a new connection gets 503 and is closed
};

class AdminConn {
 public:
  static void accept(uv_stream_t* server, AdminHandler* handler);
  // Main loop only; applies to connections accepted and requests begun afterwards.
  static void set_limits(const AdminLimits& l) { limits_ = l; }
  // admin.tls (null: plain). Main loop only; new connections use it, open ones keep theirs.
  using TlsObserver = void (*)(const net::TlsServerConfig& listener, const net::TlsSession& s, bool ok);
  static void set_tls(std::shared_ptr<const net::TlsServerConfig> tls, TlsObserver observer) {
    tls_ = std::move(tls);
    tls_observer_ = observer;
  }
  static size_t open_count() { return count_; }
  void respond(const AdminResponse& r);
  // Instead of respond(): a stream (server-sent events). The head goes out with no Content-Length
  // and "Connection: close" (the body runs until the connection closes), `r.body` as its first
  // bytes; then stream_send() queues frames by reference, so one encoded event serves every
  // watcher. Input from the reader is discarded from here on; its EOF closes the connection.
  void stream_begin(const AdminResponse& r);
  // false (nothing queued): more than `max_behind` bytes are already waiting to be written; the
  // caller drops this reader.
  bool stream_send(std::shared_ptr<const std::string> frame, size_t max_behind);
  size_t stream_queued() const { return queued_bytes_; }
  void close();
  // Shutdown: closes every open admin connection (their memory is freed in the close callbacks).
  static void close_all();

 private:
  explicit AdminConn(uv_loop_t* loop, AdminHandler* h);
  static void on_read(uv_stream_t* s, ssize_t n);
  static void on_write(uv_write_t* w, int status);
  static void on_stream_write(uv_write_t* w, int status);
  void stream_flush();
  static void on_gone(void* owner);
  static void on_timer(uv_timer_t* t);
  static void on_tls(void* owner, bool ok);
  static const llhttp_settings_t* settings();
  void parse();
  void arm(uint64_t ms);
  void refuse(int status, const char* code, const std::string& message);

  // What the connection is doing, for its one timer (timestamps, not a restart per read).
  enum class Phase {
    kIdle,     // between requests (or before the first): idle_timeout (header_timeout at first)
    kHead,     // a request head is arriving: header_timeout from its first byte
    kBody,     // its body is arriving: body_timeout of silence
    kBusy,     // being answered (a long poll may take minutes): no timer
    kLinger,   // answered with Connection: close; discarding input for a second
  };
  Phase phase_ = Phase::kIdle;
  uint64_t head_deadline_ms_ = 0;
  uint64_t last_read_ms_ = 0;

  net::TcpConn sock_;  // socket, timer and read buffer, closed together
  std::string peer_ip_;
  const net::TlsServerConfig* tls_cfg_ = nullptr;  // kept alive by sock_'s TLS layer
  uv_write_t wreq_{};
  bool lingering_ = false;  // answer sent with "Connection: close": discard input, then close
  http::Parser parser_;
  AdminHandler* handler_;
  AdminRequest req_;
  std::string url_;
  std::string field_, value_;
  bool in_value_ = false;
  std::string in_;        // unparsed input
  std::string out_;
  bool busy_ = false;     // a request is being handled
  bool answered_ = false; // respond() ran for the request being handled (at most once)
  bool closing_ = false;
  bool keep_alive_ = true;
  int error_ = 0;         // status for a request we refuse while parsing
  // A stream: frames waiting (the first `in_flight_` of them are being written), their bytes.
  bool streaming_ = false;
  std::deque<std::shared_ptr<const std::string>> queue_;
  size_t in_flight_ = 0;
  size_t queued_bytes_ = 0;
  static constexpr size_t kBatch = 16;  // frames per write
  uv_buf_t bufs_[kBatch]{};
  AdminConn* prev_ = nullptr;  // every live connection, for close_all()
  AdminConn* next_ = nullptr;
  static AdminConn* live_;
  static size_t count_;
  static AdminLimits limits_;
  static std::shared_ptr<const net::TlsServerConfig> tls_;
  static TlsObserver tls_observer_;
};

}  // namespace sy::admin
