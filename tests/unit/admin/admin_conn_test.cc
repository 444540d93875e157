// AdminConn on a real libuv loop (port 0): requests in, answers out, pipelined requests, a deferred
// answer, a client that leaves mid-request; every handle closed so that uv_loop_close() succeeds
// (a leaked handle makes it UV_EBUSY; a leaked connection is an AddressSanitizer report).
#include <doctest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "proxy/admin/admin_conn.h"
#include "tests/unit/loop_rig.h"

using sy::admin::AdminConn;
using sy::admin::AdminHandler;
using sy::admin::AdminRequest;
using sy::admin::AdminResponse;

namespace {

// Answers "GET /now" at once and "GET /later" when release() is called.
struct Handler : AdminHandler {
  std::vector<std::string> seen;
  AdminConn* held = nullptr;
  int forgotten = 0;
  void handle(AdminConn* conn, AdminRequest& req) override {
    seen.push_back(req.method + " " + req.path + (req.query.empty() ? "" : "?" + req.query) + " " + req.body);
    if (req.path == "/later") {
      held = conn;
      return;
    }
    conn->respond(AdminResponse{200, "text/plain", {}, "got " + req.path});
  }
  void forget(AdminConn* conn) override {
    if (conn == held) held = nullptr;
    ++forgotten;
  }
  void release() {
    if (held) held->respond(AdminResponse{200, "text/plain", {}, "finally"});
    held = nullptr;
  }
};

// A loop with the admin listener on 127.0.0.1:0 and one client connection to it.
struct Rig {
  uv_loop_t loop{};
  uv_tcp_t server{};
  uv_tcp_t client{};
  uv_connect_t connect_req{};
  uv_write_t write_req{};
  Handler handler;
  std::string received;
  bool client_eof = false;
  int closes = 0;

  Rig() {
    REQUIRE(uv_loop_init(&loop) == 0);
    const sy::conf::Address bound = sy::test::listen_loopback(&loop, &server, this, [](uv_stream_t* s, int status) {
      REQUIRE(status == 0);
      AdminConn::accept(s, &static_cast<Rig*>(s->data)->handler);
    });
    uv_tcp_init(&loop, &client);
    client.data = this;
    connect_req.data = this;
    REQUIRE(uv_tcp_connect(&connect_req, &client, bound.sa(), [](uv_connect_t* r, int status) {
              REQUIRE(status == 0);
              auto* rig = static_cast<Rig*>(r->data);
              uv_read_start(
                  reinterpret_cast<uv_stream_t*>(&rig->client),
                  [](uv_handle_t*, size_t n, uv_buf_t* b) { *b = uv_buf_init(new char[n], static_cast<unsigned>(n)); },
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
                    auto* rig2 = static_cast<Rig*>(s->data);
                    if (n > 0) rig2->received.append(b->base, static_cast<size_t>(n));
                    if (n < 0) rig2->client_eof = true;
                    delete[] b->base;
                  });
            }) == 0);
  }

  void send(const std::string& bytes) {
    static std::string keep;
    keep = bytes;
    uv_buf_t b = uv_buf_init(keep.data(), static_cast<unsigned>(keep.size()));
    REQUIRE(uv_write(&write_req, reinterpret_cast<uv_stream_t*>(&client), &b, 1, nullptr) == 0);
  }

  template <class F>
  bool run_until(F done) {
    sy::test::run_until(&loop, done);
    return true;
  }

  size_t answers() const {
    size_t n = 0;
    for (size_t p = received.find("HTTP/1.1 "); p != std::string::npos; p = received.find("HTTP/1.1 ", p + 1)) ++n;
    return n;
  }

  ~Rig() {
    AdminConn::close_all();
    auto count = [](uv_handle_t* h) { ++static_cast<Rig*>(h->data)->closes; };
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&client))) uv_close(reinterpret_cast<uv_handle_t*>(&client), count);
    uv_close(reinterpret_cast<uv_handle_t*>(&server), count);
    sy::test::finish_loop(&loop);
    CHECK(closes == 2);
    CHECK(AdminConn::open_count() == 0);
  }
};

}  // namespace

TEST_CASE("admin connection: pipelined requests are answered in order on one connection") {
  Rig rig;
  rig.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\nPUT /b?k=v HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
  REQUIRE(rig.run_until([&] { return rig.answers() == 2; }));
  CHECK(rig.handler.seen == std::vector<std::string>{"GET /a ", "PUT /b?k=v body"});
  CHECK(rig.received.find("got /a") < rig.received.find("got /b"));
  CHECK(AdminConn::open_count() == 1);
}

TEST_CASE("admin connection: a deferred answer goes out when the handler gives it") {
  Rig rig;
  rig.send("GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(rig.run_until([&] { return rig.handler.held != nullptr; }));
  for (int i = 0; i < 100; ++i) uv_run(&rig.loop, UV_RUN_NOWAIT);
  CHECK(rig.answers() == 0);
  rig.handler.release();
  REQUIRE(rig.run_until([&] { return rig.answers() == 1; }));
  CHECK(rig.received.find("finally") != std::string::npos);
}

TEST_CASE("admin connection: a client that leaves mid-answer is forgotten, nothing leaks") {
  Rig rig;
  rig.send("GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(rig.run_until([&] { return rig.handler.held != nullptr; }));
  uv_close(reinterpret_cast<uv_handle_t*>(&rig.client), [](uv_handle_t* h) { ++static_cast<Rig*>(h->data)->closes; });
  REQUIRE(rig.run_until([&] { return rig.handler.forgotten == 1; }));
  CHECK(rig.handler.held == nullptr);
  CHECK(AdminConn::open_count() == 0);
}

TEST_CASE("admin connection: malformed input gets 400 and the connection closes") {
  Rig rig;
  rig.send("GARBAGE\r\n\r\n");
  REQUIRE(rig.run_until([&] { return rig.client_eof; }));
  CHECK(rig.received.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(rig.handler.seen.empty());
}
