// One TLS connection as a byte transformer: ciphertext from the socket goes in, plaintext comes
// out; plaintext to send goes in, ciphertext for the socket comes out (output()). No socket, no
// loop: the connection primitive around it (TcpConn) does the I/O, so the HTTP code above never
// knows whether its bytes were encrypted, and tests can pair a client and a server session in
// memory. Non-blocking throughout: the handshake advances on each read/write; renegotiation is
// refused by the context (tls_certs.cc).
//
// The BIO under the SSL object is our own, not a memory BIO: OpenSSL reads ciphertext straight
// from the connection's read buffer (a window set for each decrypt call; no copy, no allocation
// per read) and writes ciphertext into one string the connection sends from. An idle session so
// holds no input buffer at all, and with SSL_MODE_RELEASE_BUFFERS OpenSSL frees its record
// buffers too (as HAProxy does).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/net/tls_certs.h"

namespace sy::net {

class TicketKeys;

// What a TLS listener offers: its certificates, the SNI rule, ALPN protocols in preference order.
// Built whole at load and reload (tls_config.cc) and then shared, read-only, by every worker.
struct TlsServerConfig {
  TlsCertificates certs;
  bool strict_sni = false;
  std::vector<std::string> alpn;  // e.g. {"http/1.1"}; empty: no ALPN
  bool client_cert = false;       // client_auth optional or required: X-Forwarded-Client-Cert
  std::string label;              // the listener in metrics ("admin", or the listen address)
  const void* stats = nullptr;    // the metrics' handshake counters for this listener
  std::shared_ptr<TicketKeys> tickets;  // kept across reloads, so tickets outlive a reload
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
  // peer's certificate, which must chain to the context's trust store. `alpn_wire`: the protocols
  // offered, length-prefixed ("\x02h2"); empty: no ALPN extension.
  static std::unique_ptr<TlsSession> client(SSL_CTX* ctx, const std::string& sni, bool verify,
                                            std::string_view alpn_wire = {});
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // The connection's path: decrypts from the ciphertext window [in, in+n) into [dst, dst+cap).
  // `used` says how much ciphertext OpenSSL took (the rest stays the caller's), `got` how much
  // plaintext came. Stops when dst is full or the window is used up.
  Status decrypt(const char* in, size_t n, size_t& used, char* dst, size_t cap, size_t& got);
  // Plaintext still inside the session (a record decrypted beyond what dst could take).
  bool has_pending() const { return SSL_has_pending(ssl_) == 1; }

  // Tests' path: ciphertext copied in (feed), plaintext appended to `out` (read).
  void feed(const char* data, size_t n);
  Status read(std::string& out);

  // Encrypts plaintext (queued until the handshake is done); ciphertext goes to output().
  Status write(std::string_view plain);
  // Ciphertext waiting to be sent. The caller sends from it and erases what went.
  std::string& output() { return out_; }
  void take_output(std::string& out) {
    out += out_;
    out_.clear();
  }
  void close_notify();  // a graceful close: the alert goes out with output()

  bool handshake_done() const { return SSL_is_init_finished(ssl_) == 1; }
  bool failed() const { return failed_ || plain_http_; }
  bool resumed() const { return SSL_session_reused(ssl_) == 1; }
  std::string sni() const { return std::string(sni_view()); }
  std::string alpn() const { return std::string(alpn_view()); }
  // Views into the SSL object (valid while the session lives).
  std::string_view sni_view() const;
  std::string_view alpn_view() const;
  const char* version() const { return SSL_get_version(ssl_); }
  const std::string& error() const { return error_; }
  long verify_result() const { return SSL_get_verify_result(ssl_); }
  // A failed client handshake as a short label (metrics' `reason`): name_mismatch,
  // certificate_expired, certificate_verify_failed or handshake_failed.
  const char* failure_reason() const;
  // The first bytes looked like plain HTTP (a request line): the listener answers 400 in plain text.
  bool plain_http() const { return plain_http_; }
  // The verified peer certificate, as Envoy writes X-Forwarded-Client-Cert:
  // Hash=<SHA-256 of the DER, hex>;Subject="<RFC 2253>";URI=<each URI SAN>;DNS=<each DNS SAN>.
  // "" when the peer sent none (or it did not verify).
  std::string peer_cert_xfcc() const;
  // Gives back memory an idle session need not hold (a large output string's capacity).
  void trim(size_t keep);  // output storage up to `keep` bytes stays

 private:
  explicit TlsSession(SSL* ssl);
  Status advance();  // handshake and queued plaintext
  Status fail(int ret);
  static int bio_write(BIO* b, const char* data, int len);
  static int bio_read(BIO* b, char* data, int len);
  static long bio_ctrl(BIO* b, int cmd, long num, void* ptr);
  static BIO_METHOD* bio_method();
  SSL* ssl_;
  const char* in_ = nullptr;  // the ciphertext window of the decrypt call under way
  size_t in_n_ = 0;
  size_t in_used_ = 0;
  std::string fed_;      // tests' path: ciphertext fed and not taken yet
  std::string out_;      // ciphertext to send
  std::string pending_;  // plaintext written before the handshake finished
  std::string error_;
  bool plain_http_ = false;
  bool sniffed_ = false;
  bool failed_ = false;
};

}  // namespace sy::net
