// A listener's certificates (docs/configuration.md, "TLS"): each certificate chain and key loaded
// once into an SSL_CTX of its own (TLS 1.2 and 1.3 only, Mozilla "intermediate" ciphers), with the
// names it answers for (its DNS SANs, the subject CN when it has none), and the choice by SNI:
// exact name first, then a wildcard of the first label ("*.example.com" for "a.example.com", not
// for "a.b.example.com" nor "example.com"), else the first certificate unless strict_sni.
// Built on the main loop when the config loads (or a file changes) and shared, read-only, by every
// worker: nothing on the handshake path looks anything up but the name.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sy::net {

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

struct TlsPolicy {
  int min_version = TLS1_2_VERSION;  // TLS1_2_VERSION or TLS1_3_VERSION
  std::string ciphers;               // TLS 1.2 list; "" = Mozilla intermediate
};

// Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3 suites are OpenSSL's defaults, all AEAD).
extern const char* const kIntermediateCiphers;

struct TlsCertificate {
  std::string cert_path, key_path;
  std::vector<std::string> names;  // lower case; "*.x.y" for wildcards
  int64_t not_after = 0;           // unix seconds
  SslCtxPtr ctx;
};

class TlsCertificates {
 public:
  // Loads one certificate (chain: the leaf first) and its key (`key_path` "" = in the cert file).
  // false: `error` names the file and OpenSSL's reason, or says that the key does not match.
  bool add(const std::string& cert_path, const std::string& key_path, const TlsPolicy& policy, std::string& error);
  // The certificate for a client's SNI (`sni` "" = none sent): nullptr when strict and nothing matches.
  const TlsCertificate* select(std::string_view sni, bool strict) const;
  const std::vector<TlsCertificate>& all() const { return certs_; }
  bool empty() const { return certs_.empty(); }

 private:
  std::vector<TlsCertificate> certs_;
};

// OpenSSL's error queue as one line (and emptied), for messages that name the reason.
std::string openssl_reason();

}  // namespace sy::net
