// A listener's certificates on real PEM files (made here with OpenSSL: EC P-256 keys, self-signed
// certificates with DNS SANs): loading, OpenSSL's reasons, a key that does not match, the SNI choice.
#include <doctest.h>

#include <string>
#include <vector>

#include "proxy/net/tls_certs.h"
#include "tests/unit/net/tls_fixtures.h"

using sy::net::TlsCertificates;
using sy::net::TlsPolicy;

using namespace sy::test;

TEST_CASE("tls certificates: names from the SANs (or the CN), expiry, and the choice by SNI") {
  TempDir d;
  EVP_PKEY* k1 = new_key();
  EVP_PKEY* k2 = new_key();
  EVP_PKEY* k3 = new_key();
  write_cert(d.file("shop.crt"), k1, {"shop.example", "www.shop.example"}, "shop", 90);
  write_key(d.file("shop.key"), k1);
  write_cert(d.file("api.pem"), k2, {"*.api.example"}, "api", 30);
  write_key(d.file("api.key"), k2);
  // One file holding the certificate and its key (key_path "").
  write_cert(d.file("old.pem"), k3, {}, "Legacy.Example", 10);
  {
    FILE* f = std::fopen((d.path + "/old.pem").c_str(), "a");
    PEM_write_PrivateKey(f, k3, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
  }
  TlsCertificates certs;
  std::string err;
  REQUIRE_MESSAGE(certs.add(d.path + "/shop.crt", d.path + "/shop.key", TlsPolicy{}, err), err);
  REQUIRE_MESSAGE(certs.add(d.path + "/api.pem", d.path + "/api.key", TlsPolicy{}, err), err);
  REQUIRE_MESSAGE(certs.add(d.path + "/old.pem", "", TlsPolicy{}, err), err);
  CHECK(certs.all()[0].names == std::vector<std::string>{"shop.example", "www.shop.example"});
  CHECK(certs.all()[1].names == std::vector<std::string>{"*.api.example"});
  CHECK(certs.all()[2].names == std::vector<std::string>{"legacy.example"});  // the CN, lower case
  const int64_t now = static_cast<int64_t>(time(nullptr));
  CHECK(certs.all()[1].not_after > now + 29 * 86400);
  CHECK(certs.all()[1].not_after < now + 31 * 86400);
  CHECK(SSL_CTX_get_min_proto_version(certs.all()[0].ctx.get()) == TLS1_2_VERSION);

  auto pick = [&](const char* sni, bool strict) -> std::string {
    const auto* c = certs.select(sni, strict);
    return c ? c->names.front() : "none";
  };
  CHECK(pick("www.shop.example", false) == "shop.example");
  CHECK(pick("WWW.Shop.Example.", false) == "shop.example");  // case and a trailing dot
  CHECK(pick("orders.api.example", false) == "*.api.example");
  CHECK(pick("a.b.api.example", false) == "shop.example");    // a wildcard is one label: the default
  CHECK(pick("api.example", false) == "shop.example");
  CHECK(pick("legacy.example", true) == "legacy.example");
  CHECK(pick("unknown.example", true) == "none");             // strict_sni
  CHECK(pick("", true) == "none");
  CHECK(pick("", false) == "shop.example");                   // no SNI: the first
  EVP_PKEY_free(k1);
  EVP_PKEY_free(k2);
  EVP_PKEY_free(k3);
}

TEST_CASE("tls certificates: a missing file, a key that does not match, bad ciphers are named") {
  TempDir d;
  EVP_PKEY* k1 = new_key();
  EVP_PKEY* k2 = new_key();
  write_cert(d.file("a.crt"), k1, {"a.example"}, "a", 1);
  write_key(d.file("b.key"), k2);
  {
    FILE* f = std::fopen(d.file("junk.crt").c_str(), "w");
    std::fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    std::fclose(f);
  }
  TlsCertificates certs;
  std::string err;
  CHECK_FALSE(certs.add(d.path + "/missing.crt", d.path + "/b.key", TlsPolicy{}, err));
  CHECK(err.find("certificate " + d.path + "/missing.crt does not load") == 0);
  CHECK(err.find("No such file") != std::string::npos);  // OpenSSL's reason, not ours
  CHECK_FALSE(certs.add(d.path + "/junk.crt", d.path + "/b.key", TlsPolicy{}, err));
  CHECK(err.find("junk.crt does not load") != std::string::npos);
  CHECK_FALSE(certs.add(d.path + "/a.crt", d.path + "/b.key", TlsPolicy{}, err));
  CHECK(err == "key " + d.path + "/b.key does not match certificate " + d.path + "/a.crt");
  TlsPolicy bad;
  bad.ciphers = "NOT-A-CIPHER";
  CHECK_FALSE(certs.add(d.path + "/a.crt", d.path + "/b.key", bad, err));
  CHECK(err.find("ciphers 'NOT-A-CIPHER'") == 0);
  CHECK(certs.empty());
  CHECK(certs.select("a.example", false) == nullptr);
  EVP_PKEY_free(k1);
  EVP_PKEY_free(k2);
}
