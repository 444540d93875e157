// libFuzzer target: the TLS listener's read path. Whatever a client sends before and during the
// handshake (records, garbage, a plain-HTTP request line) goes through TlsSession::decrypt the way
// TcpConn feeds it — in pieces, from a read buffer, into a bounded plaintext buffer — and the
// session must end in a clear state (progress, close or a sticky error) without crashing, reading
// out of bounds or growing without bound. The first input byte picks the piece size.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#define SY_FIXTURE_REQUIRE(x) \
  do {                        \
    if (!(x)) std::abort();   \
  } while (0)
#include "proxy/net/tls_session.h"
#include "tests/unit/net/tls_fixtures.h"

namespace {

const sy::net::TlsServerConfig& listener() {
  static sy::net::TlsServerConfig* cfg = [] {
    static sy::test::TempDir dir;
    EVP_PKEY* key = sy::test::new_key();
    sy::test::write_cert(dir.file("c.pem"), key, {"shop.example", "*.api.example"}, "shop", 30);
    sy::test::write_key(dir.file("k.pem"), key);
    EVP_PKEY_free(key);
    auto* c = new sy::net::TlsServerConfig;
    std::string err;
    if (!c->certs.add(dir.path + "/c.pem", dir.path + "/k.pem", sy::net::TlsPolicy{}, err)) std::abort();
    c->strict_sni = false;
    c->alpn = {"http/1.1"};
    c->arm();
    return c;
  }();
  return *cfg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64 * 37;  // 1 .. 2332 bytes per "read"
  ++data;
  --size;
  auto s = sy::net::TlsSession::server(listener());
  if (!s) std::abort();
  std::string cipher;  // as TcpConn's ciphertext buffer: unread bytes stay for the next call
  char plain[4096];
  size_t at = 0;
  for (int turn = 0; turn < 10000; ++turn) {
    const size_t n = std::min(piece, size - at);
    cipher.append(reinterpret_cast<const char*>(data) + at, n);
    at += n;
    size_t used = 0, got = 0;
    const auto st = s->decrypt(cipher.data(), cipher.size(), used, plain, sizeof plain, got);
    if (used > cipher.size() || got > sizeof plain) std::abort();
    cipher.erase(0, used);
    s->output().clear();  // what would go to the socket
    if (st != sy::net::TlsSession::Status::kOk) {
      // Sticky: a failed session stays failed.
      size_t u2 = 0, g2 = 0;
      if (st == sy::net::TlsSession::Status::kError &&
          s->decrypt(nullptr, 0, u2, plain, sizeof plain, g2) != sy::net::TlsSession::Status::kError)
        std::abort();
      break;
    }
    if (at == size && used == 0 && got == 0) break;
  }
  return 0;
}
