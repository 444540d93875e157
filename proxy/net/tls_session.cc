// TlsSession: OpenSSL on two memory BIOs, plus the listener's SNI and ALPN choices.
#include "proxy/net/tls_session.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

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

// ---- the BIO: a window in, a string out ----

BIO_METHOD* TlsSession::bio_method() {
  // Made once per process, on first use (C++ guarantees the one-time initialisation is safe).
  static BIO_METHOD* m = [] {
    BIO_METHOD* b = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "switchyard");
    BIO_meth_set_write(b, bio_write);
    BIO_meth_set_read(b, bio_read);
    BIO_meth_set_ctrl(b, bio_ctrl);
    BIO_meth_set_create(b, [](BIO* x) {
      BIO_set_init(x, 1);
      return 1;
    });
    return b;
  }();
  return m;
}

int TlsSession::bio_write(BIO* b, const char* data, int len) {
  auto* t = static_cast<TlsSession*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  t->out_.append(data, static_cast<size_t>(len));
  return len;
}

int TlsSession::bio_read(BIO* b, char* data, int len) {
  auto* t = static_cast<TlsSession*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  const size_t left = t->in_n_ - t->in_used_;
  if (left == 0) {
    BIO_set_retry_read(b);  // more to come: OpenSSL answers WANT_READ
    return -1;
  }
  const size_t n = std::min(left, static_cast<size_t>(len));
  std::memcpy(data, t->in_ + t->in_used_, n);
  t->in_used_ += n;
  return static_cast<int>(n);
}

long TlsSession::bio_ctrl(BIO* b, int cmd, long, void*) {
  auto* t = static_cast<TlsSession*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return static_cast<long>(t->in_n_ - t->in_used_);
    case BIO_CTRL_WPENDING: return static_cast<long>(t->out_.size());
    default: return 0;
  }
}

TlsSession::TlsSession(SSL* ssl) : ssl_(ssl) {
  BIO* b = BIO_new(bio_method());
  BIO_set_data(b, this);
  SSL_set_bio(ssl_, b, b);  // one BIO both ways (owned by ssl_)
  // Not SSL_MODE_RELEASE_BUFFERS: it frees and reallocates OpenSSL's 16 KB record buffers around
  // nearly every record, an allocation per read while a body streams. trim() frees them instead,
  // when the connection goes idle (SSL_free_buffers), so an idle connection holds none either.
  SSL_set_mode(ssl_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

std::unique_ptr<TlsSession> TlsSession::server(const TlsServerConfig& cfg) {
  if (cfg.certs.empty()) return nullptr;
  SSL* ssl = SSL_new(cfg.certs.all().front().ctx.get());
  if (!ssl) return nullptr;
  SSL_set_accept_state(ssl);
  return std::unique_ptr<TlsSession>(new TlsSession(ssl));
}

std::unique_ptr<TlsSession> TlsSession::client(SSL_CTX* ctx, const std::string& sni, bool verify, std::string_view alpn_wire) {
  SSL* ssl = SSL_new(ctx);
  if (!ssl) return nullptr;
  // Per session, not on the shared context: one service's context serves HTTP/1.1 and HTTP/2
  // instances alike (a registration's "protocol" decides).
  if (!alpn_wire.empty() &&
      SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(alpn_wire.data()), static_cast<unsigned>(alpn_wire.size())) != 0) {
    SSL_free(ssl);
    return nullptr;
  }
  SSL_set_connect_state(ssl);
  // An IP literal is never sent as SNI (RFC 6066 §3) and is checked against the IP SANs.
  unsigned char ip[16];
  const bool is_ip = inet_pton(AF_INET, sni.c_str(), ip) == 1 || inet_pton(AF_INET6, sni.c_str(), ip) == 1;
  if (!sni.empty() && !is_ip) SSL_set_tlsext_host_name(ssl, sni.c_str());
  if (verify) {
    SSL_set_verify(ssl, SSL_VERIFY_PEER, nullptr);
    if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), sni.c_str());
    else if (!sni.empty()) SSL_set1_host(ssl, sni.c_str());
  }
  auto s = std::unique_ptr<TlsSession>(new TlsSession(ssl));
  s->sniffed_ = true;
  s->advance();  // the ClientHello
  return s;
}

const char* TlsSession::failure_reason() const {
  const long v = verify_result();
  if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) return "name_mismatch";
  if (v == X509_V_ERR_CERT_HAS_EXPIRED) return "certificate_expired";
  if (v != X509_V_OK) return "certificate_verify_failed";
  return "handshake_failed";
}

void TlsSession::feed(const char* data, size_t n) { fed_.append(data, n); }

TlsSession::Status TlsSession::read(std::string& out) {
  char buf[16384];
  for (;;) {
    size_t used = 0, got = 0;
    const Status st = decrypt(fed_.data(), fed_.size(), used, buf, sizeof buf, got);
    fed_.erase(0, used);
    out.append(buf, got);
    if (st != Status::kOk || got < sizeof buf) return st;
  }
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

TlsSession::Status TlsSession::decrypt(const char* in, size_t n, size_t& used, char* dst, size_t cap, size_t& got) {
  used = got = 0;
  if (n > 0 && !sniffed_) {
    sniffed_ = true;
    // A TLS record starts with its content type (22: handshake); a request line with a letter.
    const unsigned char c = static_cast<unsigned char>(in[0]);
    if (c >= 'A' && c <= 'Z') plain_http_ = true;
  }
  in_ = in;
  in_n_ = n;
  in_used_ = 0;
  Status st = advance();
  while (st == Status::kOk && handshake_done() && got < cap) {
    size_t k = 0;
    ERR_clear_error();
    const int r = SSL_read_ex(ssl_, dst + got, cap - got, &k);
    if (r == 1) {
      got += k;
      continue;
    }
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    st = fail(r);
  }
  used = in_used_;
  in_ = nullptr;
  in_n_ = in_used_ = 0;
  return st;
}

TlsSession::Status TlsSession::write(std::string_view plain) {
  if (!handshake_done() || !pending_.empty() || failed_) {
    pending_.append(plain.data(), plain.size());  // sent once the handshake is done
    return advance();
  }
  // Straight from the caller's bytes: the BIO takes every record, so nothing is left over.
  size_t done = 0;
  ERR_clear_error();
  if (!plain.empty() && SSL_write_ex(ssl_, plain.data(), plain.size(), &done) != 1) return fail(0);
  return Status::kOk;
}

void TlsSession::close_notify() {
  if (handshake_done()) SSL_shutdown(ssl_);
}

void TlsSession::trim(size_t keep) {
  if (out_.empty() && out_.capacity() > keep) std::string().swap(out_);
  if (pending_.empty() && pending_.capacity() > 0) std::string().swap(pending_);
  SSL_free_buffers(ssl_);  // refuses (harmlessly) while a record is half read or written
}

namespace {

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    s.push_back(d[p[i] >> 4]);
    s.push_back(d[p[i] & 15]);
  }
  return s;
}

}  // namespace

std::string TlsSession::peer_cert_xfcc() const {
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (!peer || SSL_get_verify_result(ssl_) != X509_V_OK) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  X509_digest(peer, EVP_sha256(), md, &md_len);
  std::string out = "Hash=" + hex(md, md_len);
  BIO* mem = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long len = BIO_get_mem_data(mem, &data);
  std::string subject(data, static_cast<size_t>(len > 0 ? len : 0));
  BIO_free(mem);
  // Quoted, so a comma in the DN does not end the field; a quote inside is escaped.
  std::string q;
  for (char c : subject) {
    if (c == '"' || c == '\\') q.push_back('\\');
    q.push_back(c);
  }
  out += ";Subject=\"" + q + "\"";
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(peer, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int kind : {GEN_URI, GEN_DNS}) {
      for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
        const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != kind) continue;
        const ASN1_IA5STRING* v = kind == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
        std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)), static_cast<size_t>(ASN1_STRING_length(v)));
        // Control characters, ';' and ',' would split the header: such a name is left out.
        bool clean = true;
        for (char c : text) clean = clean && static_cast<unsigned char>(c) > 0x20 && c != ';' && c != ',' && c != '"';
        if (clean) out += std::string(kind == GEN_URI ? ";URI=" : ";DNS=") + std::string(text);
      }
    }
    GENERAL_NAMES_free(sans);
  }
  return out;
}

std::string_view TlsSession::sni_view() const {
  const char* n = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return n ? std::string_view(n) : std::string_view();
}

std::string_view TlsSession::alpn_view() const {
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  return p ? std::string_view(reinterpret_cast<const char*>(p), n) : std::string_view();
}

}  // namespace sy::net
