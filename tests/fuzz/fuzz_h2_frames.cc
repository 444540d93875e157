// libFuzzer target: HTTP/2 frames into the client-side codec (H2Session and its streams), the
// whole way a client's bytes go: a real Worker on a libuv loop accepts a loopback connection, the
// input follows the connection preface in pieces (the first input byte picks the piece size), and
// every stream becomes an exchange — routed, forwarded as HTTP/1.1 to an instance on the same loop
// that answers each request it reads, or refused (404, 4xx, RST_STREAM, GOAWAY) — and the answer
// goes back in frames, read and thrown away by the client. Then the client half-closes and the
// connection must be gone within a bounded number of loop turns: no crash, no out-of-bounds access
// (ASan), no leak (LeakSanitizer at exit), no connection or stream left behind.
//
// The loopback socket is the transport here: the session is driven exactly as in the proxy, with
// no test-only seam in the codec. Only 127.0.0.1 is used.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "proxy/net/listener.h"
#include "proxy/server/downstream_conn.h"
#include "proxy/server/routing_table.h"
#include "proxy/server/worker.h"
#include "registry/registry.h"

namespace {

using namespace sy;

// The instance: answers every read with one small HTTP/1.1 response (keep-alive). Enough for the
// proxy's response path (head, DATA, flow control, END_STREAM); a request body read in several
// pieces gets several answers, which the proxy must survive too.
struct Instance {
  uv_tcp_t server{};
  static void on_conn(uv_stream_t* s, int status) {
    if (status < 0) return;
    auto* c = new uv_tcp_t;
    uv_tcp_init(s->loop, c);
    if (uv_accept(s, reinterpret_cast<uv_stream_t*>(c)) != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(c), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      return;
    }
    uv_read_start(reinterpret_cast<uv_stream_t*>(c),
                  [](uv_handle_t*, size_t, uv_buf_t* b) {
                    static char buf[65536];
                    *b = uv_buf_init(buf, sizeof buf);
                  },
                  [](uv_stream_t* st, ssize_t n, const uv_buf_t*) {
                    if (n < 0) {
                      // Closed with a reset: when the proxy closed first (an exchange it gave up),
                      // its socket waits in FIN_WAIT_2 and the reset ends it there; a FIN would put
                      // it in TIME_WAIT, and a minute of runs fills the port range (connect fails).
                      uv_os_fd_t fd;
                      if (uv_fileno(reinterpret_cast<uv_handle_t*>(st), &fd) == 0) {
                        const linger l{1, 0};
                        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
                      }
                      uv_close(reinterpret_cast<uv_handle_t*>(st), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
                      return;
                    }
                    if (n == 0) return;
                    static const char kAnswer[] = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-From: fuzz\r\n\r\nhello world";
                    auto* w = new uv_write_t;
                    uv_buf_t b = uv_buf_init(const_cast<char*>(kAnswer), sizeof kAnswer - 1);
                    uv_write(w, st, &b, 1, [](uv_write_t* req, int) { delete req; });
                  });
  }
};

struct Rig {
  uv_loop_t loop{};
  server::RoutingTableSlot slot;
  server::Worker worker;
  Instance instance;
  conf::Address proxy;

  Rig() {
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &instance.server);
    sockaddr_in a{};
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (uv_tcp_bind(&instance.server, reinterpret_cast<const sockaddr*>(&a), 0) != 0) std::abort();
    if (uv_listen(reinterpret_cast<uv_stream_t*>(&instance.server), 128, Instance::on_conn) != 0) std::abort();
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&instance.server, reinterpret_cast<sockaddr*>(&bound), &len);
    const int port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

    // Small windows and limits, so the fuzzer reaches them with small inputs.
    const std::string yaml = "client: { max_body_bytes: 65536, max_header_bytes: 8192 }\n"
                             "http2: { max_concurrent_streams: 8, initial_stream_window: 16384, connection_window: 65536,"
                             " max_header_list_bytes: 4096, max_control_frames_per_second: 50 }\n"
                             "services:\n  svc: { retry: { attempts: 1 }, instances: [{ address: 127.0.0.1:" + std::to_string(port) + " }] }\n";
    auto cfg = std::make_shared<conf::Config>();
    std::vector<std::string> errors;
    if (!conf::load_string(yaml, "fuzz.yaml", *cfg, errors)) {
      for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
      std::abort();
    }
    static registry::Registry reg;
    reg.apply_config(*cfg);
    auto table = server::build_routing_table(reg, *cfg);
    table->config = cfg;
    slot.store(std::move(table));

    worker.loop = &loop;
    worker.table = &slot;
    auto l = std::make_unique<net::Listener>();
    conf::Address any;
    if (!conf::parse_address("127.0.0.1:0", any, true).empty()) std::abort();
    if (!l->open(&loop, any, false, [](void* ctx, uv_stream_t* s, int status) {
          server::DownstreamConn::accept(*static_cast<server::Worker*>(ctx), s, status);
        }, &worker).empty())
      std::abort();
    proxy = l->bound();
    worker.own_listeners.push_back(proxy);
    worker.listeners.push_back(std::move(l));
  }
};

Rig& rig() {
  static Rig* r = new Rig;  // for the process's life (libFuzzer never returns from its loop)
  return *r;
}

int connect_client(const conf::Address& a) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) std::abort();
  sockaddr_in sa{};
  uv_ip4_addr("127.0.0.1", a.port(), &sa);
  // Closed with a reset, not a FIN: tens of thousands of runs would otherwise fill the port range
  // with TIME_WAIT sockets.
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  if (rc != 0 && errno == EINTR) {
    // libFuzzer's SIGALRM (its -timeout watchdog) interrupted the call; the connection goes on
    // being made, and connect() again would fail with EALREADY: wait for it instead.
    pollfd p{fd, POLLOUT, 0};
    while ((rc = ::poll(&p, 1, -1)) < 0 && errno == EINTR) {}
    int err = 0;
    socklen_t len = sizeof err;
    if (rc > 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0) rc = err == 0 ? 0 : -1;
    if (err != 0) errno = err;
  }
  if (rc != 0) {
    std::fprintf(stderr, "connect to the proxy: %s\n", std::strerror(errno));
    std::abort();
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// Whatever the proxy sent so far, read and dropped (so it never waits on a full socket buffer).
// False once the proxy closed the connection.
bool drain(int fd) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Rig& r = rig();
  const size_t piece = 1 + data[0] % 32 * 61;  // 1 .. 1892 bytes per write
  ++data;
  --size;
  const int fd = connect_client(r.proxy);
  // Until the proxy accepted it: the preface and the input then go to that connection.
  for (int i = 0; i < 1000 && r.worker.conn_count == 0; ++i) uv_run(&r.loop, UV_RUN_NOWAIT);
  if (r.worker.conn_count != 1) std::abort();
  static const char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  std::string out(kPreface, sizeof kPreface - 1);
  out.append(reinterpret_cast<const char*>(data), size);
  bool open = true;
  for (size_t at = 0; at < out.size() && open;) {
    const ssize_t n = ::send(fd, out.data() + at, std::min(piece, out.size() - at), MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;  // the proxy closed it (GOAWAY, reset)
    if (n > 0) at += static_cast<size_t>(n);
    for (int i = 0; i < 4; ++i) uv_run(&r.loop, UV_RUN_NOWAIT);
    open = drain(fd);
  }
  // The client is done sending: the connection (and every stream on it) must end.
  ::shutdown(fd, SHUT_WR);
  for (int i = 0; i < 100000 && r.worker.conn_count > 0; ++i) {
    uv_run(&r.loop, UV_RUN_NOWAIT);
    drain(fd);
  }
  if (r.worker.conn_count != 0) std::abort();  // a connection that outlived its client
  ::close(fd);
  // Streams are freed on a later turn (their timers close asynchronously); so are upstream
  // connections the instance closed.
  for (int i = 0; i < 16; ++i) uv_run(&r.loop, UV_RUN_NOWAIT);
  r.worker.outcomes.clear();  // (no breakers here to hand them to)
  return 0;
}
