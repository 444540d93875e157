// TlsCertificates: loading with OpenSSL's reasons, names from the leaf, the SNI choice.
#include "proxy/net/tls_certs.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <ctime>

namespace sy::net {

const char* const kIntermediateCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

namespace {

std::string lowered(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::vector<std::string> names_of(X509* leaf) {
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type != GEN_DNS) continue;
      const auto* data = reinterpret_cast<const char*>(ASN1_STRING_get0_data(g->d.dNSName));
      names.push_back(lowered(std::string_view(data, static_cast<size_t>(ASN1_STRING_length(g->d.dNSName)))));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {  // no DNS SAN: the subject's CN, as old certificates carry it
    char cn[256] = "";
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof cn) > 0) names.push_back(lowered(cn));
  }
  return names;
}

int64_t not_after_of(X509* leaf) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

std::string openssl_reason() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

bool TlsCertificates::add(const std::string& cert_path, const std::string& key_path, const TlsPolicy& policy,
                          std::string& error) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    error = "cannot create a TLS context: " + openssl_reason();
    return false;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), policy.min_version);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  // Renegotiation refused (a client-initiated one is a CPU cost the client chooses).
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  const std::string ciphers = policy.ciphers.empty() ? kIntermediateCiphers : policy.ciphers;
  if (SSL_CTX_set_cipher_list(ctx.get(), ciphers.c_str()) != 1) {
    error = "ciphers '" + ciphers + "': " + openssl_reason();
    return false;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_path.c_str()) != 1) {
    error = "certificate " + cert_path + " does not load: " + openssl_reason();
    return false;
  }
  const std::string& key = key_path.empty() ? cert_path : key_path;
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the pair as it loads the key: say that plainly rather than its code.
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      error = "key " + key + " does not match certificate " + cert_path;
    } else {
      error = "key " + key + " does not load: " + openssl_reason();
    }
    return false;
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    ERR_clear_error();
    error = "key " + key + " does not match certificate " + cert_path;
    return false;
  }
  X509* leaf = SSL_CTX_get0_certificate(ctx.get());
  TlsCertificate c;
  c.cert_path = cert_path;
  c.key_path = key;
  c.names = names_of(leaf);
  c.not_after = not_after_of(leaf);
  c.ctx = std::move(ctx);
  certs_.push_back(std::move(c));
  return true;
}

const TlsCertificate* TlsCertificates::select(std::string_view sni_in, bool strict) const {
  if (certs_.empty()) return nullptr;
  std::string sni = lowered(sni_in);
  if (!sni.empty() && sni.back() == '.') sni.pop_back();
  if (!sni.empty()) {
    for (const auto& c : certs_)
      for (const auto& n : c.names)
        if (n == sni) return &c;
    // A wildcard covers exactly one label: "*.example.com" is "a.example.com", not "a.b.example.com".
    const size_t dot = sni.find('.');
    if (dot != std::string::npos && dot > 0) {
      const std::string wild = "*" + sni.substr(dot);
      for (const auto& c : certs_)
        for (const auto& n : c.names)
          if (n == wild) return &c;
    }
  }
  return strict ? nullptr : &certs_.front();
}

}  // namespace sy::net
