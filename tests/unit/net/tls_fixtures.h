// What the TLS unit tests share: a temporary directory, EC P-256 keys and self-signed certificates
// with DNS SANs, made with OpenSSL in the test itself (no files in the tree, no external tool).
// Also used by the TLS fuzz target, which defines SY_FIXTURE_REQUIRE itself (no doctest there).
#pragma once

#ifndef SY_FIXTURE_REQUIRE
#include <doctest.h>
#define SY_FIXTURE_REQUIRE(x) REQUIRE(x)
#endif
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace sy::test {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sy-tls-XXXXXX";
    SY_FIXTURE_REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    for (const auto& f : files) ::unlink(f.c_str());
    ::rmdir(path.c_str());
  }
  std::string file(const std::string& name) {
    files.push_back(path + "/" + name);
    return files.back();
  }
  std::vector<std::string> files;
};

inline EVP_PKEY* new_key() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  SY_FIXTURE_REQUIRE(k != nullptr);
  return k;
}

// A self-signed certificate for `names` (DNS SANs; none: CN only), valid for `days`.
inline void write_cert(const std::string& path, EVP_PKEY* key, const std::vector<std::string>& names, const char* cn, long days) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
  X509_set_pubkey(x, key);
  X509_NAME* n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509_set_issuer_name(x, n);
  if (!names.empty()) {
    std::string san;
    for (const auto& s : names) san += (san.empty() ? "DNS:" : ",DNS:") + s;
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, san.c_str());
    SY_FIXTURE_REQUIRE(ext != nullptr);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  SY_FIXTURE_REQUIRE(X509_sign(x, key, EVP_sha256()) > 0);
  FILE* f = std::fopen(path.c_str(), "w");
  SY_FIXTURE_REQUIRE(f != nullptr);
  PEM_write_X509(f, x);
  std::fclose(f);
  X509_free(x);
}

inline void write_key(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  SY_FIXTURE_REQUIRE(f != nullptr);
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
}

}  // namespace sy::test
