// One exchange with an instance, as the proxy's side of it (ProxyStream, a health probe) sees it:
// the request goes up as a head, body pieces and an end (with trailers), the response comes back
// as UpstreamOwner events. Two codecs sit behind it: HTTP/1.1 (UpstreamConn: the exchange is the
// connection, pooled idle between exchanges) and HTTP/2 (H2Exchange: one stream of an H2Upstream
// connection that many exchanges share). The framing lives in the codec, so the caller never
// writes protocol bytes (HAProxy's stream connector over mux_h1 / mux_h2, Envoy's
// RequestEncoder / ResponseDecoder).
//
// Threading: lives on one loop; every method and callback runs on that loop.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "conf/units.h"
#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/net/tls_config.h"

namespace sy::upstream {

class Exchange;
class Pool;

// TLS to an instance: the client context (CA, verification, client certificate) and the name sent
// as SNI and checked against the certificate.
struct TlsTarget {
  std::shared_ptr<const net::TlsClientConfig> cfg;
  std::string name;

  // Makes `sock` (just connected) a TLS client of this target, offering `alpn_wire` (may be
  // empty); the ClientHello goes out at once and `ev` reports the handshake's end. False: OpenSSL
  // could not make a session, and `why` says so. Both upstream codecs start TLS through this.
  bool start(net::TcpConn& sock, net::TcpConn::TlsEvent ev, std::string_view alpn_wire, std::string& why) const {
    auto session = net::TlsSession::client(cfg->ctx.get(), name, cfg->verify, alpn_wire);
    if (!session) {
      why = "cannot start a TLS session: " + net::openssl_reason();
      return false;
    }
    sock.start_tls(std::move(session), cfg, ev);
    return true;
  }
};

enum class UpstreamError {
  kConnectFailed,    // refused, unreachable
  kConnectTimeout,
  kReset,            // closed or reset before the response was complete
  kResponseTimeout,  // no response head within timeouts.response of the request's last byte
  kIdleTimeout,      // a response body stalled for timeouts.idle
  kSendTimeout,      // the backend took no request bytes for timeouts.idle (it stopped reading)
  kBadResponse,      // unparseable response
  kTlsFailed,        // the TLS handshake failed (a certificate that does not verify, ...): a
                     // connect failure for retries, breakers and outlier detection
  kRefused,          // HTTP/2: the instance refused the stream or it was above a GOAWAY's last
                     // stream id: it never reached the application (retried as a connect failure)
};
const char* error_name(UpstreamError e);

// What an exchange reports to whoever is using it. Each call runs on the loop; an owner may
// close or release the exchange inside any of them.
class UpstreamOwner {
 public:
  virtual ~UpstreamOwner() = default;
  virtual void on_upstream_connected(Exchange* c) = 0;
  // A response head (1xx heads come too, before the final one).
  virtual void on_upstream_head(Exchange* c, const http::MessageHead& head) = 0;
  // Response body bytes; they stay valid until the owner's flush of them completed (see
  // on_upstream_read_done).
  virtual void on_upstream_body(Exchange* c, const char* p, size_t n) = 0;
  virtual void on_upstream_complete(Exchange* c) = 0;
  // The response's trailer fields: head's fields from `first` on. Just before
  // on_upstream_complete; only when there are some.
  virtual void on_upstream_trailers(Exchange* c, const http::MessageHead& head, size_t first) {
    (void)c, (void)head, (void)first;
  }
  // The bytes of one read have been handed over: time to flush them downstream. Return true when
  // the flush is pending; the exchange delivers nothing more until resume_reading().
  virtual bool on_upstream_read_done(Exchange* c) = 0;
  virtual void on_upstream_error(Exchange* c, UpstreamError e) = 0;
  // Everything sent so far has been written (HTTP/2: taken into frames and written).
  virtual void on_upstream_drained(Exchange* c) = 0;
};

class Exchange {
 public:
  // ---- the request ----
  // The head, rewritten for the instance from the client's `req` (rewrite.h); `f.framing` says
  // how the body that follows is delimited on HTTP/1.1.
  virtual void send_head(const http::MessageHead& req, const http::RequestForward& f) = 0;
  // Body bytes. `copy`: `p` is gone after the call; otherwise it stays valid until drained.
  virtual void send_body(const char* p, size_t n, bool copy) = 0;
  // The request's end, with its trailer section ("name: value\r\n" lines, already filtered by
  // http::append_trailer_lines; "" = none).
  virtual void send_end(std::string_view trailer_lines) = 0;
  // After a 101 (HTTP/1.1 only): raw bytes up, no framing.
  virtual void send_raw(const char* p, size_t n) = 0;
  // Something was sent since the last write().
  virtual bool has_output() const = 0;
  // A write() has not drained yet: nothing more is sent until on_upstream_drained.
  virtual bool write_pending() const = 0;
  virtual void write() = 0;

  // ---- the response ----
  // Arms the response side. `head_request`: the response has no body. `idle_timeout` bounds a
  // stalled response body and, while the request is still going up, a backend that stops taking
  // its bytes. No time limit runs for the response head until request_sent().
  virtual void expect_response(bool head_request, conf::Millis idle_timeout) = 0;
  // The request's last byte is written: the response head must come within `response_timeout`
  // (nginx's proxy_read_timeout, HAProxy's timeout server). No effect once the head is here.
  virtual void request_sent(conf::Millis response_timeout) = 0;
  virtual void pause_reading() = 0;
  virtual void resume_reading() = 0;
  virtual void start_tunnel() = 0;  // after a 101; bytes after the response head go to on_upstream_body
  // The response head said how long its body is (Content-Length): true and `n`. False: it runs to
  // the end of the exchange (HTTP/1.1 chunked or until close, HTTP/2 DATA until END_STREAM).
  virtual bool response_length(uint64_t& n) const = 0;

  // ---- lifetime ----
  // The exchange ended cleanly and its connection may serve another: back to `pool` (HTTP/1.1)
  // or its stream simply ends (HTTP/2). Otherwise close(): HTTP/1.1 closes the connection,
  // HTTP/2 resets only the stream (RST_STREAM CANCEL).
  virtual void release(Pool& pool, conf::Millis idle_timeout) = 0;
  virtual void close() = 0;

  // Was the connection used before (a pooled keep-alive one that the backend may have closed)?
  virtual bool reused() const = 0;
  virtual bool response_started() const = 0;
  // Why the TLS handshake failed (kTlsFailed), and a short label of it for metrics.
  const std::string& tls_error() const { return tls_error_; }
  const char* tls_reason() const { return tls_reason_; }

 protected:
  Exchange() = default;
  ~Exchange() = default;
  std::string tls_error_;
  const char* tls_reason_ = "";
};

}  // namespace sy::upstream
