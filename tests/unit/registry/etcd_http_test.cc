// The etcd gateway connection (registry/etcd/http_conn) on a real libuv loop against a scripted
// server on port 0: a unary answer, a streamed answer split across reads, a silent server (the
// call times out and the connection reports itself broken), a refused connect; every handle
// closed so that uv_loop_close() succeeds.
#include <doctest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "registry/etcd/http_conn.h"
#include "tests/unit/loop_rig.h"

using sy::registry::etcd::HttpConn;

namespace {

// Accepts one connection; at its first bytes writes `answer` (nothing when empty).
struct Server {
  uv_loop_t* loop;
  uv_tcp_t listener{};
  uv_tcp_t conn{};
  bool accepted = false;
  std::string answer;
  std::string received;
  uv_write_t wreq{};
  char buf[4096];
  sy::conf::Address addr;

  explicit Server(uv_loop_t* l, std::string a) : loop(l), answer(std::move(a)) {
    addr = sy::test::listen_loopback(loop, &listener, this, [](uv_stream_t* s, int) {
      auto* self = static_cast<Server*>(s->data);
      uv_tcp_init(self->loop, &self->conn);
      self->conn.data = self;
      REQUIRE(uv_accept(s, reinterpret_cast<uv_stream_t*>(&self->conn)) == 0);
      self->accepted = true;
      uv_read_start(reinterpret_cast<uv_stream_t*>(&self->conn), [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* me = static_cast<Server*>(h->data);
        *b = uv_buf_init(me->buf, sizeof me->buf);
      }, [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
        auto* me = static_cast<Server*>(st->data);
        if (n <= 0) return;
        const bool first = me->received.empty();
        me->received.append(b->base, static_cast<size_t>(n));
        if (!first || me->answer.empty()) return;
        uv_buf_t out = uv_buf_init(me->answer.data(), static_cast<unsigned>(me->answer.size()));
        uv_write(&me->wreq, st, &out, 1, nullptr);
      });
    });
  }
  void close() {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
    if (accepted) uv_close(reinterpret_cast<uv_handle_t*>(&conn), nullptr);
  }
};

using sy::test::run_until;
void finish(uv_loop_t* loop) { sy::test::finish_loop(loop); }

}  // namespace

TEST_CASE("etcd HttpConn: pipelined unary calls are answered in order") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Server srv(&loop, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
                    "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"b\r\n4\r\n\":2}\r\n0\r\n\r\n");
  HttpConn* c = HttpConn::open(&loop, srv.addr, 5000, [](HttpConn*) { FAIL("broken"); });
  std::vector<std::string> got;
  c->post("/v3/kv/range", "{}", [&](int status, std::string body, const std::string& err) {
    CHECK(err.empty());
    got.push_back(std::to_string(status) + " " + body);
  });
  c->post("/v3/kv/txn", "{\"x\":1}", [&](int status, std::string body, const std::string& err) {
    CHECK(err.empty());
    got.push_back(std::to_string(status) + " " + body);
  });
  run_until(&loop, [&] { return got.size() == 2; });
  CHECK(got[0] == "200 {\"a\":1}");
  CHECK(got[1] == "404 {\"b\":2}");
  CHECK(srv.received.find("POST /v3/kv/range HTTP/1.1\r\n") == 0);
  CHECK(srv.received.find("Content-Length: 7\r\n\r\n{\"x\":1}") != std::string::npos);
  c->close();
  srv.close();
  finish(&loop);
}

TEST_CASE("etcd HttpConn: a stream delivers each line as it arrives, split or not") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Server srv(&loop, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "a\r\n{\"r\":1}\n{\"\r\n7\r\nr\":2}\n{\r\n6\r\n\"r\":3}\r\n0\r\n\r\n");
  HttpConn* c = HttpConn::open(&loop, srv.addr, 5000, nullptr);
  std::vector<std::string> lines;
  bool ended = false;
  c->stream("/v3/watch", "{}", [&](std::string_view l) { lines.emplace_back(l); },
            [&](int status, std::string, const std::string& err) {
              CHECK(status == 200);
              CHECK(err.empty());
              ended = true;
            }, "Grpc-Metadata-hasleader: true\r\n");
  run_until(&loop, [&] { return ended; });
  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == "{\"r\":1}");
  CHECK(lines[1] == "{\"r\":2}");
  CHECK(lines[2] == "{\"r\":3}");  // the last one without its newline
  CHECK(srv.received.find("Grpc-Metadata-hasleader: true\r\n") != std::string::npos);
  c->close();
  srv.close();
  finish(&loop);
}

TEST_CASE("etcd HttpConn: a silent server times the call out; a refused connect fails it") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Server srv(&loop, "");
  int broken = 0;
  HttpConn* c = HttpConn::open(&loop, srv.addr, 200, [&](HttpConn* b) {
    ++broken;
    b->close(true);
  });
  std::string error;
  c->post("/v3/kv/range", "{}", [&](int, std::string, const std::string& err) { error = err; });
  run_until(&loop, [&] { return !error.empty(); });
  CHECK(error.find("did not answer within 200 ms") != std::string::npos);
  CHECK(broken == 1);
  srv.close();
  uv_run(&loop, UV_RUN_NOWAIT);

  // A port nobody listens on (the listener just closed).
  std::string refused;
  HttpConn* d = HttpConn::open(&loop, srv.addr, 2000, [](HttpConn* b) { b->close(true); });
  d->post("/v3/kv/range", "{}", [&](int, std::string, const std::string& err) { refused = err; });
  run_until(&loop, [&] { return !refused.empty(); });
  CHECK(refused.find("connect to") != std::string::npos);
  finish(&loop);
}
