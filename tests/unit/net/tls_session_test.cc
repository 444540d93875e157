// A client and a server TlsSession paired in memory (no sockets): the handshake, SNI choosing the
// certificate, ALPN in the server's order, verification, data both ways, close_notify; strict SNI,
// a certificate for another name, plain HTTP sent to a TLS port.
#include <doctest.h>

#include <string>

#include "proxy/net/tls_session.h"
#include "tests/unit/net/tls_fixtures.h"

using namespace sy::net;
using namespace sy::test;

namespace {

struct ClientCtx {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  explicit ClientCtx(const std::string& trust, const char* alpn_wire = nullptr, unsigned alpn_len = 0) {
    REQUIRE(ctx);
    REQUIRE(SSL_CTX_load_verify_locations(ctx, trust.c_str(), nullptr) == 1);
    if (alpn_wire) SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn_wire), alpn_len);
  }
  ~ClientCtx() { SSL_CTX_free(ctx); }
};

// Moves ciphertext both ways until neither side has anything to send; collects plaintext.
void pump(TlsSession& c, TlsSession& s, std::string& at_client, std::string& at_server, TlsSession::Status& cs,
          TlsSession::Status& ss) {
  for (int turn = 0; turn < 20; ++turn) {
    std::string to_s, to_c;
    c.take_output(to_s);
    s.feed(to_s.data(), to_s.size());
    ss = s.read(at_server);
    s.take_output(to_c);
    c.feed(to_c.data(), to_c.size());
    cs = c.read(at_client);
    if (to_s.empty() && to_c.empty()) return;
  }
  FAIL("the sessions kept talking");
}

struct Certs {
  TempDir d;
  TlsServerConfig cfg;
  Certs(bool strict) {
    EVP_PKEY* k1 = new_key();
    EVP_PKEY* k2 = new_key();
    write_cert(d.file("shop.crt"), k1, {"shop.example"}, "shop", 30);
    write_key(d.file("shop.key"), k1);
    write_cert(d.file("api.crt"), k2, {"*.api.example"}, "api", 30);
    write_key(d.file("api.key"), k2);
    std::string err;
    REQUIRE_MESSAGE(cfg.certs.add(d.path + "/shop.crt", d.path + "/shop.key", TlsPolicy{}, err), err);
    REQUIRE_MESSAGE(cfg.certs.add(d.path + "/api.crt", d.path + "/api.key", TlsPolicy{}, err), err);
    cfg.strict_sni = strict;
    cfg.alpn = {"h2", "http/1.1"};
    cfg.arm();
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
  }
};

}  // namespace

TEST_CASE("tls session: SNI picks the certificate, ALPN follows the server, data both ways, close_notify") {
  Certs certs(false);
  const char alpn[] = "\x08http/1.1\x02h2";  // the client prefers http/1.1; the server's order wins
  ClientCtx cc(certs.d.path + "/api.crt", alpn, sizeof alpn - 1);
  auto c = TlsSession::client(cc.ctx, "orders.api.example", true);
  auto s = TlsSession::server(certs.cfg);
  REQUIRE(c);
  REQUIRE(s);
  REQUIRE(c->write("GET / HTTP/1.1\r\n\r\n") == TlsSession::Status::kOk);  // queued until the handshake ends
  std::string at_c, at_s;
  TlsSession::Status cs{}, ss{};
  pump(*c, *s, at_c, at_s, cs, ss);
  REQUIRE_MESSAGE(cs == TlsSession::Status::kOk, c->error());
  REQUIRE_MESSAGE(ss == TlsSession::Status::kOk, s->error());
  CHECK(c->handshake_done());
  CHECK(s->handshake_done());
  CHECK(s->sni() == "orders.api.example");
  CHECK(s->alpn() == "h2");
  CHECK(c->alpn() == "h2");
  CHECK(std::string(s->version()) == "TLSv1.3");
  CHECK(at_s == "GET / HTTP/1.1\r\n\r\n");
  s->write(std::string(100000, 'x'));  // more than one record
  pump(*c, *s, at_c, at_s, cs, ss);
  CHECK(at_c == std::string(100000, 'x'));
  s->close_notify();
  pump(*c, *s, at_c, at_s, cs, ss);
  CHECK(cs == TlsSession::Status::kClosed);
}

TEST_CASE("tls session: strict SNI refuses an unknown name; a certificate for another name fails verification") {
  // A handshake of a client trusting `trust` asking for `sni`; the client's error.
  auto refused = [](bool strict, const char* trust, const char* sni, bool verify, bool server_fails) {
    Certs certs(strict);
    ClientCtx cc(certs.d.path + trust);
    auto c = TlsSession::client(cc.ctx, sni, verify);
    auto s = TlsSession::server(certs.cfg);
    std::string at_c, at_s;
    TlsSession::Status cs{}, ss{};
    pump(*c, *s, at_c, at_s, cs, ss);
    CHECK(cs == TlsSession::Status::kError);
    CHECK(!s->handshake_done());
    if (server_fails) CHECK(ss == TlsSession::Status::kError);
    return c->error();
  };
  CHECK(refused(true, "/shop.crt", "unknown.example", false, true).find("unrecognized name") != std::string::npos);
  // Not strict: the default (shop.example) is sent, and the client checks it against its name.
  CHECK(refused(false, "/shop.crt", "other.example", true, false).find("certificate verify failed") != std::string::npos);
}

TEST_CASE("tls session: plain HTTP sent to a TLS port is recognised, not waited for") {
  Certs certs(false);
  auto s = TlsSession::server(certs.cfg);
  const std::string req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  s->feed(req.data(), req.size());
  std::string out;
  CHECK(s->read(out) == TlsSession::Status::kError);
  CHECK(s->plain_http());
  CHECK(s->error() == "plain HTTP on a TLS port");
}
