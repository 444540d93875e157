// One TLS connection as a byte transformer on memory BIOs: ciphertext from the socket goes in
// (feed), plaintext comes out (read); plaintext to send goes in (write), ciphertext for the socket
// comes out (take_output). No socket, no loop: the connection primitive around it (proxy/net) does
// the I/O, so the HTTP code above never knows whether its bytes were encrypted, and tests can pair
// a client and a server session in memory. Non-blocking throughout: the handshake advances on each
// feed/read/write; renegotiation is refused by the context (tls_certs.cc).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/net/tls_certs.h"

namespace sy::net {

// What a TLS listener offers: its certificates, the SNI rule, ALPN protocols in preference order.
struct TlsServerConfig {
  TlsCertificates certs;
  bool strict_sni = false;
  std::vector<std::string> alpn;  // e.g. {"http/1.1"}; empty: no ALPN
  // Installs the SNI and ALPN callbacks on every certificate's context; call once all are added
  // and before the config is shared (the callbacks point at this object: it must not move).
  void arm();
  std::string alpn_wire;  // `alpn` in the wire format (length-prefixed), built by arm()
};

class TlsSession {
 public:
  enum class Status {
    kOk,       // progress made (maybe no plaintext yet: the handshake is under way)
    kClosed,   // the peer sent close_notify
    kError,    // fatal: error() says why (bad handshake, plain HTTP to a TLS port, ...)
  };

  // `cfg` outlives the session (the listener's, kept by every connection that uses it).
  static std::unique_ptr<TlsSession> server(const TlsServerConfig& cfg);
  // A client session (upstreams, tests): `sni` is sent and, with `verify`, checked against the
  // peer's certificate, which must chain to the context's trust store.
  static std::unique_ptr<TlsSession> client(SSL_CTX* ctx, const std::string& sni, bool verify);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  void feed(const char* data, size_t n);
  // Decrypts what it can, appending plaintext to `out`.
  Status read(std::string& out);
  // Queues plaintext (sent once the handshake is done; ciphertext appears in take_output()).
  Status write(std::string_view plain);
  // Ciphertext to send, appended to `out`.
  void take_output(std::string& out);
  void close_notify();  // a graceful close: the alert goes out with take_output()

  bool handshake_done() const { return SSL_is_init_finished(ssl_) == 1; }
  std::string sni() const;
  std::string alpn() const;
  const char* version() const { return SSL_get_version(ssl_); }
  const std::string& error() const { return error_; }
  // The first bytes looked like plain HTTP (a request line): the listener answers 400 in plain text.
  bool plain_http() const { return plain_http_; }

 private:
  explicit TlsSession(SSL* ssl);
  Status advance();  // handshake and queued plaintext
  Status fail(int ret);
  SSL* ssl_;
  BIO* in_;   // ciphertext from the peer (owned by ssl_)
  BIO* out_;  // ciphertext to the peer (owned by ssl_)
  std::string pending_;  // plaintext written before the handshake finished
  std::string error_;
  bool plain_http_ = false;
  bool sniffed_ = false;
  bool failed_ = false;
};

}  // namespace sy::net
