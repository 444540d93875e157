// The exchange's view of its client: what a ProxyStream asks of whatever carries its request and
// response. Two implementations: an HTTP/1.1 connection (DownstreamConn: one exchange at a time on
// a socket, llhttp, keep-alive, pipelining, tunnels) and an HTTP/2 stream (H2Stream: one of many
// exchanges multiplexed by an nghttp2 session on a connection). The exchange routes, limits,
// attempts, retries and relays; the client side frames bytes and owns reading, writing, timers and
// closing (HAProxy's stream connector between a stream and its mux, Envoy's StreamEncoder /
// StreamDecoder pair).
//
// The shared fields are plain members, not accessors: the request path reads them several times
// per exchange and the HTTP/1.1 connection is the hot case.
//
// Threading: its worker's loop only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"

namespace sy::net {
class TlsSession;
struct ReadBuffer;
}  // namespace sy::net

namespace sy::server {

class ClientSide {
 public:
  enum class State {
    kIdle,         // between requests: no bytes of the next one yet; idle (or first-request
                   // header) timer armed; no read buffer held
    kReadingHead,  // a request head is arriving; header timer armed
    kConnecting,   // head parsed; an upstream connection is being made (or a retry backoff runs
                   // out); client reads stopped
    kForwarding,   // request body going up and/or response coming down
    kTunnel,       // after a 101: raw bytes both ways (HTTP/1.1 only)
    kLingering,    // last response written, write side shut down; reading and discarding what
                   // the client still sends (so it gets our answer, not a reset); linger timer
    kHttp2,        // the connection speaks HTTP/2: its streams are the exchanges (H2Session)
    kClosed,       // uv_close issued (HTTP/2 stream: reset or finished); freed when closed
  };

  // ---- reading the request ----
  // Wants more request bytes (HTTP/1.1: read the socket; HTTP/2: give the window back for what
  // went upstream).
  virtual void start_reading() = 0;
  virtual void stop_reading() = 0;
  // Request bytes already received go up behind the head just sent (HTTP/1.1: parse on).
  virtual void process_input() = 0;
  // May this client carry another exchange after this one (HTTP/1.1 keep-alive)?
  virtual bool keep_alive() const = 0;
  // HTTP/1.1's read buffer (the tunnel and the obs-fold check read it); nullptr for HTTP/2.
  virtual net::ReadBuffer* h1_input() = 0;

  // ---- the response ----
  // A 1xx other than 101, as it came (HTTP/1.0 clients know none: dropped for them).
  virtual void out_interim(const http::MessageHead& head, http::ResponseForward& f) = 0;
  virtual void out_head(const http::MessageHead& head, http::ResponseForward& f) = 0;
  virtual void out_body(const char* p, size_t n) = 0;
  // The response's trailer fields (head's fields from `first` on), just before out_end: HTTP/1.1
  // sends them in the last chunk (a body sent with Content-Length has no place for them), HTTP/2
  // as a trailing HEADERS frame.
  virtual void out_trailers(const http::MessageHead& head, size_t first) = 0;
  virtual void out_end() = 0;
  // The proxy's own answer (JSON body, x-switchyard-error); `extra` header lines of its own.
  // false: it cannot be queued now (an interim response is still being written).
  // `grpc_status` >= 0: the request is gRPC, so the answer is that gRPC status (HTTP 200,
  // grpc-status and grpc-message; trailers-only on HTTP/2), as a gRPC client library expects.
  virtual bool out_error(int status, std::string_view code, std::string_view message, std::string_view extra,
                         int grpc_status) = 0;
  // Bytes of a response went (or are queued) to the client.
  virtual bool out_begun() const = 0;
  // Sends what the exchange queued: net::OutBatch::kDone, kPending (the client side calls the
  // exchange back once written: resume the upstream, or finish) or a negative error.
  virtual int flush_client() = 0;

  // ---- lifetime ----
  // The response is wholly written: the access-log record, then keep-alive, linger or close.
  virtual void finish_exchange() = 0;
  // Ends this client's part at once (HTTP/1.1: the connection; HTTP/2: the stream is reset).
  virtual void close() = 0;
  // One timer per client side: the body timeout and the retry backoff.
  virtual void arm(int64_t ms) = 0;
  void arm(conf::Millis t) { arm(t.count()); }

  // ---- what the exchange reports ----
  virtual const net::TlsSession* tls() const = 0;
  virtual std::string_view protocol() const = 0;  // "HTTP/1.1", "HTTP/2.0" (access log)

  State state_ = State::kIdle;
  bool close_after_ = false;         // close once the current response is written
  int64_t body_quiet_since_ms_ = 0;  // last request-body read, or when we last became willing to read;
                                     // while lingering: when the lingering close began
  std::shared_ptr<const conf::Config> cfg_;
  std::string client_ip_;
  std::string client_cert_;  // X-Forwarded-Client-Cert of a verified client certificate

 protected:
  ClientSide() = default;
  ~ClientSide() = default;
};

}  // namespace sy::server
