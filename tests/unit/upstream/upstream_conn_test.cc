// UpstreamConn and Pool on a real libuv loop against a scripted backend on port 0: a request and
// its response, the connection parked in the pool and taken again (reused), the backend closing an
// idle pooled connection (the pool lets go of it), a refused connect, a silent backend (response
// timeout). Every handle is closed at the end, so uv_loop_close() succeeds.
#include <doctest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "proxy/upstream/pool.h"
#include "proxy/upstream/upstream_conn.h"
#include "tests/unit/loop_rig.h"

using namespace sy;
using upstream::Pool;
using upstream::UpstreamConn;
using upstream::UpstreamError;

namespace {

// Answers each request (each "\r\n\r\n") with `answer`, unless silent; can close its side.
struct Backend {
  uv_loop_t* loop;
  uv_tcp_t listener{};
  std::vector<uv_tcp_t*> conns;
  std::string answer;
  int requests = 0;
  char buf[4096];
  conf::Address addr;

  Backend(uv_loop_t* l, std::string a) : loop(l), answer(std::move(a)) {
    addr = test::listen_loopback(loop, &listener, this, [](uv_stream_t* s, int) {
      auto* self = static_cast<Backend*>(s->data);
      auto* c = new uv_tcp_t{};
      uv_tcp_init(self->loop, c);
      c->data = self;
      REQUIRE(uv_accept(s, reinterpret_cast<uv_stream_t*>(c)) == 0);
      self->conns.push_back(c);
      uv_read_start(reinterpret_cast<uv_stream_t*>(c), [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* me = static_cast<Backend*>(h->data);
        *b = uv_buf_init(me->buf, sizeof me->buf);
      }, [](uv_stream_t* st, ssize_t n, const uv_buf_t* b) {
        auto* me = static_cast<Backend*>(st->data);
        if (n <= 0) return;
        if (std::string(b->base, static_cast<size_t>(n)).find("\r\n\r\n") == std::string::npos) return;
        ++me->requests;
        if (me->answer.empty()) return;
        auto* w = new uv_write_t{};
        uv_buf_t out = uv_buf_init(me->answer.data(), static_cast<unsigned>(me->answer.size()));
        uv_write(w, st, &out, 1, [](uv_write_t* req, int) { delete req; });
      });
    });
  }
  void close_conns() {
    for (auto* c : conns) uv_close(reinterpret_cast<uv_handle_t*>(c), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    conns.clear();
  }
  void close() {
    close_conns();
    uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  }
};

struct Owner : upstream::UpstreamOwner {
  bool connected = false, complete = false;
  int status = 0;
  std::string body;
  std::vector<UpstreamError> errors;
  void on_upstream_connected(upstream::Exchange*) override { connected = true; }
  void on_upstream_head(upstream::Exchange*, const http::MessageHead& h) override { status = h.status; }
  void on_upstream_body(upstream::Exchange*, const char* p, size_t n) override { body.append(p, n); }
  void on_upstream_complete(upstream::Exchange*) override { complete = true; }
  bool on_upstream_read_done(upstream::Exchange*) override { return false; }
  void on_upstream_error(upstream::Exchange* c, UpstreamError e) override {
    errors.push_back(e);
    c->close();
  }
  void on_upstream_drained(upstream::Exchange*) override {}
};

using test::run_until;

void send_get(UpstreamConn* c, conf::Millis response_timeout) {
  c->out().copy("GET / HTTP/1.1\r\nHost: b\r\n\r\n");
  c->expect_response(false, conf::Millis(5000));
  c->write();
  c->request_sent(response_timeout);
}

}  // namespace

TEST_CASE("UpstreamConn: a response, the connection parked and reused, then closed by the backend while idle") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    net::BufferPool buffers;
    Pool pool;
    Backend be(&loop, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    Owner o;
    UpstreamConn* c = UpstreamConn::connect(&loop, buffers, be.addr, 7, conf::Millis(5000), &o);
    REQUIRE(c != nullptr);
    run_until(&loop, [&] { return o.connected; });
    send_get(c, conf::Millis(5000));
    run_until(&loop, [&] { return o.complete; });
    CHECK(o.status == 200);
    CHECK(o.body == "ok");
    CHECK(c->reusable());
    c->release(pool, conf::Millis(60000));
    CHECK(pool.take(8) == nullptr);  // another instance's
    UpstreamConn* again = pool.take(7);
    REQUIRE(again == c);
    Owner o2;
    again->attach(&o2);
    send_get(again, conf::Millis(5000));
    run_until(&loop, [&] { return o2.complete; });
    CHECK(again->reused());
    CHECK(be.requests == 2);
    again->release(pool, conf::Millis(60000));
    // The backend closes the idle connection: the pool notices and lets it go.
    be.close_conns();
    for (int i = 0; i < 1000 && pool.take(7) == nullptr; ++i) uv_run(&loop, UV_RUN_ONCE);
    CHECK(pool.take(7) == nullptr);
    pool.close_all();
    be.close();
  }
  test::finish_loop(&loop);
}

TEST_CASE("UpstreamConn: refused connect and a silent backend are reported as such") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    net::BufferPool buffers;
    Backend silent(&loop, "");
    Owner o;
    UpstreamConn* c = UpstreamConn::connect(&loop, buffers, silent.addr, 1, conf::Millis(5000), &o);
    run_until(&loop, [&] { return o.connected; });
    send_get(c, conf::Millis(100));
    run_until(&loop, [&] { return !o.errors.empty(); });
    CHECK(o.errors[0] == UpstreamError::kResponseTimeout);
    const conf::Address gone = silent.addr;
    silent.close();
    uv_run(&loop, UV_RUN_NOWAIT);
    Owner r;
    UpstreamConn* d = UpstreamConn::connect(&loop, buffers, gone, 2, conf::Millis(5000), &r);
    REQUIRE(d != nullptr);
    run_until(&loop, [&] { return !r.errors.empty(); });
    CHECK(r.errors[0] == UpstreamError::kConnectFailed);
  }
  test::finish_loop(&loop);
}
