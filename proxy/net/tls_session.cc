// TlsSession: OpenSSL on two memory BIOs, plus the listener's SNI and ALPN choices.
#include "proxy/net/tls_session.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace sy::net {

namespace {

int on_servername(SSL* s, int* alert, void* arg) {
  const auto* cfg = static_cast<const TlsServerConfig*>(arg);
  const char* name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
  const TlsCertificate* cert = cfg->certs.select(name ? name : "", cfg->strict_sni);
  if (!cert) {
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  if (cert->ctx.get() != SSL_get_SSL_CTX(s)) SSL_set_SSL_CTX(s, cert->ctx.get());
  return SSL_TLSEXT_ERR_OK;
}

int on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen, void* arg) {
  const auto* cfg = static_cast<const TlsServerConfig*>(arg);
  unsigned char* chosen = nullptr;
  // The server's order decides (h2 before http/1.1 once both are offered).
  if (SSL_select_next_proto(&chosen, outlen, reinterpret_cast<const unsigned char*>(cfg->alpn_wire.data()),
                            static_cast<unsigned>(cfg->alpn_wire.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

void TlsServerConfig::arm() {
  alpn_wire.clear();
  for (const auto& p : alpn) {
    alpn_wire.push_back(static_cast<char>(p.size()));
    alpn_wire += p;
  }
  for (const auto& c : certs.all()) {
    SSL_CTX_set_tlsext_servername_callback(c.ctx.get(), on_servername);
    SSL_CTX_set_tlsext_servername_arg(c.ctx.get(), this);
    if (!alpn_wire.empty()) SSL_CTX_set_alpn_select_cb(c.ctx.get(), on_alpn, this);
  }
}

TlsSession::TlsSession(SSL* ssl) : ssl_(ssl), in_(BIO_new(BIO_s_mem())), out_(BIO_new(BIO_s_mem())) {
  BIO_set_mem_eof_return(in_, -1);  // an empty input is "more to come", not the end
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

std::unique_ptr<TlsSession> TlsSession::server(const TlsServerConfig& cfg) {
  if (cfg.certs.empty()) return nullptr;
  SSL* ssl = SSL_new(cfg.certs.all().front().ctx.get());
  if (!ssl) return nullptr;
  SSL_set_accept_state(ssl);
  return std::unique_ptr<TlsSession>(new TlsSession(ssl));
}

std::unique_ptr<TlsSession> TlsSession::client(SSL_CTX* ctx, const std::string& sni, bool verify) {
  SSL* ssl = SSL_new(ctx);
  if (!ssl) return nullptr;
  SSL_set_connect_state(ssl);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  if (verify) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    if (!sni.empty()) SSL_set1_host(ssl, sni.c_str());
  }
  auto s = std::unique_ptr<TlsSession>(new TlsSession(ssl));
  s->sniffed_ = true;
  s->advance();  // the ClientHello
  return s;
}

void TlsSession::feed(const char* data, size_t n) {
  if (n == 0) return;
  if (!sniffed_) {
    sniffed_ = true;
    // A TLS record starts with its content type (22: handshake); a request line with a letter.
    const unsigned char c = static_cast<unsigned char>(data[0]);
    if (c >= 'A' && c <= 'Z') plain_http_ = true;
  }
  BIO_write(in_, data, static_cast<int>(n));
}

TlsSession::Status TlsSession::fail(int ret) {
  const int e = SSL_get_error(ssl_, ret);
  if (e == SSL_ERROR_ZERO_RETURN) return Status::kClosed;
  failed_ = true;  // fatal: every later call says so too
  if (error_.empty()) {
    if (e == SSL_ERROR_SSL) {
      error_ = openssl_reason();
      const long v = SSL_get_verify_result(ssl_);
      if (v != X509_V_OK) error_ += " (" + std::string(X509_verify_cert_error_string(v)) + ")";
    } else {
      error_ = "TLS error " + std::to_string(e);
      ERR_clear_error();
    }
  }
  return Status::kError;
}

TlsSession::Status TlsSession::advance() {
  if (failed_) return Status::kError;
  if (plain_http_) {
    error_ = "plain HTTP on a TLS port";
    return Status::kError;
  }
  if (!handshake_done()) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_);
    if (r != 1) {
      const int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::kOk;
      return fail(r);
    }
  }
  if (!pending_.empty()) {
    size_t done = 0;
    if (SSL_write_ex(ssl_, pending_.data(), pending_.size(), &done) != 1) return fail(0);
    pending_.erase(0, done);
  }
  return Status::kOk;
}

TlsSession::Status TlsSession::read(std::string& out) {
  Status st = advance();
  if (st != Status::kOk || !handshake_done()) return st;
  char buf[16384];
  for (;;) {
    size_t got = 0;
    ERR_clear_error();
    const int r = SSL_read_ex(ssl_, buf, sizeof buf, &got);
    if (r == 1) {
      out.append(buf, got);
      continue;
    }
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::kOk;
    return fail(r);
  }
}

TlsSession::Status TlsSession::write(std::string_view plain) {
  pending_.append(plain.data(), plain.size());
  return advance();
}

void TlsSession::take_output(std::string& out) {
  const size_t n = BIO_ctrl_pending(out_);
  if (n == 0) return;
  const size_t at = out.size();
  out.resize(at + n);
  const int got = BIO_read(out_, out.data() + at, static_cast<int>(n));
  out.resize(at + static_cast<size_t>(got > 0 ? got : 0));
}

void TlsSession::close_notify() {
  if (handshake_done()) SSL_shutdown(ssl_);
}

std::string TlsSession::sni() const {
  const char* n = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return n ? n : "";
}

std::string TlsSession::alpn() const {
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  return p ? std::string(reinterpret_cast<const char*>(p), n) : "";
}

}  // namespace sy::net
