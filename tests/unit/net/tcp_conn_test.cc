// net::TcpConn on a real libuv loop (port 0): the owner is told once, after both handles are
// closed; a lingering close's shutdown reaches the peer as EOF; uv_loop_close() succeeds after.
#include <doctest.h>
#include <uv.h>

#include <cstring>
#include <string>

#include "proxy/net/tcp_conn.h"
#include "tests/unit/loop_rig.h"

namespace {

struct Owner {
  sy::net::TcpConn sock;
  int* gone = nullptr;
  std::string got;   // bytes the read callback saw (consumed from sock.rbuf)
  int reads = 0;     // read callbacks with n > 0
  bool ended = false;
  static void on_read(uv_stream_t* s, ssize_t n) {
    auto* self = static_cast<Owner*>(s->data);
    if (n < 0) {
      self->ended = true;
      return;
    }
    ++self->reads;
    sy::net::ReadBuffer& rb = self->sock.rbuf;
    self->got.append(rb.data + rb.start, rb.pending());
    rb.start = rb.end;
  }
  static void on_gone(void* o) {
    auto* self = static_cast<Owner*>(o);
    ++*self->gone;
    delete self;
  }
};

struct Rig {
  sy::net::BufferPool pool;  // (before the loop: outlives it)
  uv_loop_t loop{};
  uv_tcp_t server{};
  uv_tcp_t client{};
  uv_connect_t connect_req{};
  Owner* accepted = nullptr;
  int gone = 0;
  bool client_eof = false;
  bool shutdown_done = false;
  int writes_done = 0;
  char buf[256];
  uv_write_t wreq{};

  // The client sends `text` (a static string); writes_done counts completions.
  void send(const char* text) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(text), static_cast<unsigned>(strlen(text)));
    wreq.data = this;
    REQUIRE(uv_write(&wreq, reinterpret_cast<uv_stream_t*>(&client), &b, 1, [](uv_write_t* w, int status) {
      REQUIRE(status == 0);
      ++static_cast<Rig*>(w->data)->writes_done;
    }) == 0);
  }

  Rig() {
    REQUIRE(uv_loop_init(&loop) == 0);
    const sy::conf::Address bound = sy::test::listen_loopback(&loop, &server, this, [](uv_stream_t* s, int status) {
      REQUIRE(status == 0);
      auto* r = static_cast<Rig*>(s->data);
      auto* o = new Owner;
      o->sock.init(&r->loop, o, r->pool);
      o->gone = &r->gone;
      REQUIRE(uv_accept(s, o->sock.stream()) == 0);
      r->accepted = o;
    });
    uv_tcp_init(&loop, &client);
    client.data = this;
    REQUIRE(uv_tcp_connect(&connect_req, &client, bound.sa(), [](uv_connect_t* c, int status) {
      REQUIRE(status == 0);
      uv_read_start(c->handle, [](uv_handle_t* h, size_t, uv_buf_t* b) {
        auto* r = static_cast<Rig*>(h->data);
        *b = uv_buf_init(r->buf, sizeof r->buf);
      }, [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
        if (n == UV_EOF) static_cast<Rig*>(s->data)->client_eof = true;
      });
    }) == 0);
  }
  // The server side of the client connection, once accepted.
  Owner* accept_one() {
    run_until([&] { return accepted != nullptr; });
    return accepted;
  }
  template <typename P>
  void run_until(P done) {
    sy::test::run_until(&loop, done);
  }
  ~Rig() {
    uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&client))) uv_close(reinterpret_cast<uv_handle_t*>(&client), nullptr);
    sy::test::finish_loop(&loop);
  }
};

}  // namespace

TEST_CASE("TcpConn: close frees the owner once, after both handles; a second close is nothing") {
  Rig r;
  Owner* o = r.accept_one();
  o->sock.arm(60000, [](uv_timer_t*) { FAIL("timer fired after close"); });
  o->sock.close(Owner::on_gone);
  CHECK(o->sock.closing());
  o->sock.close(Owner::on_gone);  // idempotent
  CHECK(r.gone == 0);             // not before the close callbacks
  r.run_until([&] { return r.gone == 1; });
  r.run_until([&] { return r.client_eof; });  // the peer sees the connection end
  CHECK(r.gone == 1);
}

TEST_CASE("TcpConn: shutdown_write sends FIN while the connection stays open") {
  Rig r;
  Owner* o = r.accept_one();
  // The shutdown callback gets the owner.
  static Owner* seen_owner = nullptr;
  REQUIRE(o->sock.shutdown_write([](void* owner, int status) {
    CHECK(status == 0);
    seen_owner = static_cast<Owner*>(owner);
  }));
  r.run_until([&] { return r.client_eof && seen_owner != nullptr; });
  CHECK(seen_owner == o);
  CHECK(r.gone == 0);
  o->sock.close(Owner::on_gone);
  r.run_until([&] { return r.gone == 1; });
}

TEST_CASE("TcpConn: a close before the FIN went cancels the shutdown, reported before the owner goes") {
  Rig r;
  Owner* o = r.accept_one();
  static int status_seen = 0;
  static int gone_then = -1;
  static int* gone_count = nullptr;
  gone_count = &r.gone;
  REQUIRE(o->sock.shutdown_write([](void*, int status) {
    status_seen = status;
    gone_then = *gone_count;
  }));
  o->sock.close(Owner::on_gone);  // the request is still queued: libuv cancels it
  r.run_until([&] { return r.gone == 1; });
  CHECK(status_seen == UV_ECANCELED);
  CHECK(gone_then == 0);  // the owner was still there for it (and the request was freed: ASan)
}

TEST_CASE("TcpConn: reads land in a pooled buffer, held only while bytes are in it") {
  Rig r;
  Owner* o = r.accept_one();
  o->sock.read_start(Owner::on_read);
  r.send("hello");
  r.run_until([&] { return o->got == "hello"; });
  CHECK(o->sock.rbuf.data != nullptr);  // consumed, not given back yet
  CHECK(r.pool.parked() == 0);
  o->sock.release_if_empty();
  CHECK(o->sock.rbuf.data == nullptr);
  CHECK(r.pool.parked() == 1);
  r.send("again");
  r.run_until([&] { return o->got == "helloagain"; });
  CHECK(r.pool.parked() == 0);  // the same buffer, taken again
  o->sock.close(Owner::on_gone);
  r.run_until([&] { return r.gone == 1; });
  CHECK(r.pool.parked() == 1);  // given back with the last close callback
}

TEST_CASE("TcpConn: a lazy pause leaves bytes in the kernel until read_start") {
  Rig r;
  Owner* o = r.accept_one();
  o->sock.read_start(Owner::on_read);
  o->sock.read_pause();
  CHECK(o->sock.armed_);  // still armed in libuv: no epoll_ctl for the pause
  r.send("queued");
  // Bytes arriving while paused stop the read for real, unread.
  r.run_until([&] { return !o->sock.armed_; });
  CHECK(o->got.empty());
  CHECK(o->reads == 0);
  o->sock.read_start(Owner::on_read);
  r.run_until([&] { return o->got == "queued"; });
  o->sock.close(Owner::on_gone);
  r.run_until([&] { return r.gone == 1; });
}

TEST_CASE("TcpConn: read_now takes what is already there without arming libuv") {
  Rig r;
  Owner* o = r.accept_one();
  CHECK_FALSE(o->sock.read_now(Owner::on_read));  // nothing sent yet
  CHECK(o->sock.rbuf.data == nullptr);            // and no buffer kept for it
  r.send("early");
  r.run_until([&] { return r.writes_done == 1; });
  // (Loopback: a completed write is in the peer's receive queue.)
  CHECK(o->sock.read_now(Owner::on_read));
  CHECK(o->got == "early");
  CHECK_FALSE(o->sock.armed_);
  o->sock.close(Owner::on_gone);
  r.run_until([&] { return r.gone == 1; });
}

TEST_CASE("TcpConn: discarding reads and drops input; the end still reaches the owner") {
  Rig r;
  Owner* o = r.accept_one();
  o->sock.discard();
  o->sock.read_start(Owner::on_read);
  r.send("ignored");
  r.run_until([&] { return o->reads > 0; });
  CHECK(o->got.empty());
  CHECK(o->sock.rbuf.data == nullptr);  // no buffer taken for discarded input
  uv_close(reinterpret_cast<uv_handle_t*>(&r.client), nullptr);
  r.run_until([&] { return o->ended; });
  o->sock.close(Owner::on_gone);
  r.run_until([&] { return r.gone == 1; });
}
