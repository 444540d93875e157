// DownstreamConn: the client side of the proxy and the exchange it drives.
// Past 600 lines: the client connection, its exchange and the exchange's attempts still live in one
// object; issue 13 cuts them apart (connection / proxy_stream / retry_state, the last one done).
#include "proxy/server/downstream_conn.h"
#include "proxy/http/chunked.h"
#include "proxy/net/assert.h"
#include "proxy/server/retry_state.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>

#include "proxy/net/close.h"

namespace sy::server {

using upstream::UpstreamConn;
using upstream::UpstreamError;

namespace {

int64_t ms(conf::Millis m) { return m.count(); }

constexpr int64_t kLingerMs = 1000;
// A request body up to this size is kept while it streams, so a retry can send it again.
constexpr size_t kReplayLimit = 64 * 1024;

health::Outcome outcome_of(upstream::UpstreamError e) {
  switch (e) {
    case upstream::UpstreamError::kConnectFailed:
    case upstream::UpstreamError::kConnectTimeout:
      return health::Outcome::kConnectFailure;
    case upstream::UpstreamError::kResponseTimeout:
    case upstream::UpstreamError::kIdleTimeout:
    case upstream::UpstreamError::kSendTimeout:
      return health::Outcome::kTimeout;
    default:
      return health::Outcome::kReset;
  }
}

bool is_connect_failure(upstream::UpstreamError e) {
  return e == upstream::UpstreamError::kConnectFailed || e == upstream::UpstreamError::kConnectTimeout;
}

// Does `on` (retry.on) name this failure?
bool names(const conf::Conditions& on, upstream::UpstreamError e) {
  switch (e) {
    case upstream::UpstreamError::kConnectFailed:
    case upstream::UpstreamError::kConnectTimeout:
      return on.connect_failure;
    case upstream::UpstreamError::kResponseTimeout:
    case upstream::UpstreamError::kSendTimeout:
      return on.timeout;
    default:
      return on.reset;
  }
}

bool method_idempotent(int m) {
  switch (m) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
      return true;
    default:
      return false;
  }
}

}  // namespace

// ---- lifecycle ----

DownstreamConn::DownstreamConn(Worker& w) : w_(w) {
  sock_.init(w.loop, this);
  parser_.init(HTTP_REQUEST, settings(), this);
}

DownstreamConn::~DownstreamConn() {
  w_.buffers.release(rbuf_.data);
  if (x_) {
    x_->to_client.clear();
    w_.exchanges.release(std::move(x_));
  }
}

void DownstreamConn::take_exchange() {
  if (!x_) x_ = w_.exchanges.acquire();
}

void DownstreamConn::accept(Worker& w, uv_stream_t* server, int status) {
  if (status < 0) {
    // libuv closed that connection already (its EMFILE reserve trick): count and log it.
    net::Resource r;
    if (w.observer && net::is_exhaustion(status, r))
      w.observer->on_exhaustion(r, std::string("accept: ") + uv_strerror(status));
    return;
  }
  if (w.conn_count >= w.max_conns) {
    // At max_connections: leave it un-accepted. libuv holds it and stops watching the listener;
    // later clients wait in the kernel's backlog (HAProxy's maxconn). close() resumes.
    if (std::find(w.paused_listeners.begin(), w.paused_listeners.end(), server) == w.paused_listeners.end()) {
      w.paused_listeners.push_back(server);
      if (w.observer) w.observer->on_exhaustion(net::Resource::kConnections, "max_connections reached; new clients wait in the backlog");
    }
    return;
  }
  auto* c = new DownstreamConn(w);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->sock_.tcp)) != 0) {
    c->state_ = State::kClosed;
    c->sock_.close(on_gone);
    return;
  }
  uv_tcp_nodelay(&c->sock_.tcp, 1);
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->sock_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    // XFF and the access log carry the address without the port (fits the string's inline
    // storage: no allocation per connection).
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss.ss_family == AF_INET) uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), ip, sizeof ip);
    else if (ss.ss_family == AF_INET6) uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), ip, sizeof ip);
    c->client_ip_.assign(ip);
  }
  c->next = w.conns;
  if (w.conns) w.conns->prev = c;
  w.conns = c;
  ++w.conn_count;
  if (w.observer) w.observer->on_connections(1);
  c->cfg_ = w.snapshot()->config;
  c->state_ = State::kIdle;
  c->arm(ms(c->cfg_->client.header_timeout));
  if (!c->read_now()) c->start_reading();
}

// The request usually arrives with the connection: reading it at once (as HAProxy does) saves
// registering the socket with epoll and a loop turn, and a connection that closes after one
// exchange is never registered at all. Returns false when nothing was there yet.
bool DownstreamConn::read_now() {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&sock_.tcp), &fd) != 0) return false;
  if (!(rbuf_.data = w_.buffers.acquire())) return false;
  ssize_t n;
  do {
    n = ::recv(fd, rbuf_.data, net::BufferPool::kSize, 0);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {  // EAGAIN; or end/error, which libuv's own read then reports
    w_.buffers.release(rbuf_.data);
    rbuf_ = {};
    return false;
  }
  want_read_ = true;
  on_read(reinterpret_cast<uv_stream_t*>(&sock_.tcp), n, nullptr);
  // A partial head needs more bytes: watch the socket now. (Later states arm it when they want.)
  if (want_read_) start_reading();
  return true;
}

void DownstreamConn::shutdown() {
  close_after_ = true;
  if (state_ == State::kIdle) close();
}

void DownstreamConn::close_now() {
  if (state_ == State::kClosed) return;
  if (s_.head_done && x_) {
    const bool answered = s_.response_started || !x_->to_client.empty() || x_->to_client.pending();
    if (!answered) {
      std::string out;
      http::build_error_response(503, "shutting_down",
                                 "switchyard is shutting down and shutdown_timeout ran out before an answer came", true, out);
      uv_buf_t buf = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
      const int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&sock_.tcp), &buf, 1);
      s_.status = 503;
      if (n > 0) s_.bytes_out += static_cast<uint64_t>(n);
    }
    record(answered ? "shutdown_timeout" : "shutting_down");
  }
  close();
}

void DownstreamConn::close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  release_exchange();
  if (prev) prev->next = next;
  else if (w_.conns == this) w_.conns = next;
  if (next) next->prev = prev;
  prev = next = nullptr;
  --w_.conn_count;
  if (w_.observer) w_.observer->on_connections(-1);
  uv_timer_stop(&sock_.timer);
  sock_.close(on_gone);
  // A place is free: a listener left waiting at max_connections takes its client now.
  if (!w_.paused_listeners.empty() && !w_.shutting_down && w_.conn_count < w_.max_conns) {
    uv_stream_t* server = w_.paused_listeners.back();
    w_.paused_listeners.pop_back();
    accept(w_, server);
  }
  if (w_.shutting_down && w_.conn_count == 0 && w_.on_drained) w_.on_drained(&w_);
}

// Closing right after an error answer while the client is still sending would make the kernel
// answer its next bytes with a reset, which can destroy our response before the client reads it.
// So: shut down our write side once the answer is out, discard input until the client closes or
// the linger timer runs out, then close (nginx's lingering close).
void DownstreamConn::linger_close() {
  if (state_ == State::kClosed || state_ == State::kLingering) return;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  state_ = State::kLingering;
  if (!sock_.shutdown_write(on_shutdown)) {
    close();
    return;
  }
  arm(kLingerMs);
  start_reading();
}

void DownstreamConn::on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<DownstreamConn*>(req->data);
  if (status < 0 && c->state_ == State::kLingering) c->close();
}

void DownstreamConn::on_gone(void* owner) {
  auto* c = static_cast<DownstreamConn*>(owner);
  SY_ASSERT(c->state_ == State::kClosed);
  delete c;
}

void DownstreamConn::arm(int64_t t) { uv_timer_start(&sock_.timer, on_timer, static_cast<uint64_t>(t), 0); }

void DownstreamConn::on_timer(uv_timer_t* t) {
  auto* c = static_cast<DownstreamConn*>(t->data);
  switch (c->state_) {
    case State::kIdle:
    case State::kLingering:
      c->close();  // idle keep-alive (or a connection that never sent a byte), or linger over
      return;
    case State::kReadingHead:
      c->send_error(408, "request_timeout", "the request head did not arrive within client.header_timeout", true);
      return;
    case State::kConnecting:
      if (c->s_.backoff) {
        c->s_.backoff = false;
        c->start_attempt();
      }
      return;
    case State::kForwarding:
      c->check_body_timeout();
      return;
    default:
      return;
  }
}

// client.body_timeout: the longest silence between two reads of the request body, counted only
// while the proxy wants the bytes (a backend slow to take them is timed on the upstream side).
// Timestamps, not timer restarts per read: the timer fires at the earliest possible expiry and
// re-arms for what is left.
void DownstreamConn::check_body_timeout() {
  if (s_.request_done || !s_.head_done) return;  // (a header timer left to run out)
  const int64_t now = static_cast<int64_t>(uv_now(w_.loop));
  const int64_t limit = ms(cfg_->client.body_timeout);
  const int64_t quiet = want_read_ ? now - body_quiet_since_ms_ : 0;
  if (quiet < limit) {
    arm(limit - quiet);
    return;
  }
  if (s_.response_started) {
    abort_exchange();  // the answer is already on its way: nothing else can be said
    return;
  }
  send_error(408, "request_timeout", "no request body bytes for client.body_timeout", true);
}

// ---- reading ----

void DownstreamConn::start_reading() {
  if (!want_read_) body_quiet_since_ms_ = static_cast<int64_t>(uv_now(w_.loop));  // silence so far was ours
  want_read_ = true;
  if (reading_ || state_ == State::kClosed) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&sock_.tcp), on_alloc, on_read) == 0) reading_ = true;
}

// Lazy: the socket stays armed in libuv, so a client that waits for its answer costs no
// epoll_ctl now and none when reading resumes (two syscalls per keep-alive request otherwise).
// Should bytes arrive meanwhile, on_alloc refuses them (they stay in the kernel) and on_read stops
// for real.
void DownstreamConn::stop_reading() { want_read_ = false; }

void DownstreamConn::stop_reading_now() {
  want_read_ = false;
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&sock_.tcp));
  reading_ = false;
}

void DownstreamConn::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<DownstreamConn*>(h->data);
  if (!c->want_read_) {
    *buf = uv_buf_init(nullptr, 0);  // not now: on_read gets UV_ENOBUFS and stops reading
    return;
  }
  if (!c->rbuf_.data && !(c->rbuf_.data = c->w_.buffers.acquire())) {
    *buf = uv_buf_init(nullptr, 0);  // out of memory: libuv reports UV_ENOBUFS, the read fails
    return;
  }
  c->rbuf_.compact();
  *buf = uv_buf_init(c->rbuf_.data + c->rbuf_.end, static_cast<unsigned>(c->rbuf_.space()));
}

void DownstreamConn::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t*) {
  auto* c = static_cast<DownstreamConn*>(s->data);
  if (n == 0 || c->state_ == State::kClosed) return;
  if (n == UV_ENOBUFS && !c->want_read_) {
    c->stop_reading_now();
    return;
  }
  if (c->state_ == State::kLingering) {
    if (n < 0) c->close();
    else c->rbuf_.start = c->rbuf_.end = 0;  // discarded
    return;
  }
  if (n == UV_ENOBUFS && c->w_.observer) c->w_.observer->on_exhaustion(net::Resource::kMemory, "no read buffer for a client");
  if (n < 0) {
    // The client went away (or half-closed). Nothing more will come: finish nothing, drop all.
    if (c->state_ == State::kForwarding && c->s_.request_done && n == UV_EOF) {
      c->stop_reading_now();  // a half-close after a complete request: let the response finish
      c->close_after_ = true;
      return;
    }
    if (c->state_ == State::kForwarding || c->state_ == State::kTunnel || c->state_ == State::kConnecting) c->record("client_closed");
    c->close();
    return;
  }
  c->rbuf_.end += static_cast<size_t>(n);  // (read_now() and libuv both read at rbuf_.end)
  c->body_quiet_since_ms_ = static_cast<int64_t>(uv_now(c->w_.loop));
  c->take_exchange();
  if (c->state_ == State::kTunnel) {
    if (c->up_) {
      c->up_->out().ref(c->rbuf_.data + c->rbuf_.start, c->rbuf_.pending());
      c->rbuf_.start = c->rbuf_.end;
      c->flush_upstream();
    }
    return;
  }
  if (c->state_ == State::kIdle) c->state_ = State::kReadingHead;  // cb_message_begin arms the header timer
  c->process_input();
}

void DownstreamConn::process_input() {
  // reset_for_next() may run inside this loop (an error answered at once); the outermost call
  // then carries on with the next pipelined request instead of recursing.
  const bool outer = !in_process_;
  in_process_ = true;
  while (state_ != State::kClosed && rbuf_.pending() > 0) {
    if (state_ == State::kConnecting || state_ == State::kTunnel || s_.paused_at_end) break;
    const char* begin = rbuf_.data + rbuf_.start;
    const http::Fed fed = parser_.feed(begin, rbuf_.pending());
    if (state_ == State::kClosed) break;
    if (fed.kind == http::Fed::Kind::kAll) {
      rbuf_.start = rbuf_.end;
      break;
    }
    if (fed.kind != http::Fed::Kind::kError) {  // paused (resumed already) or upgrade
      rbuf_.start += fed.used;
      if (s_.paused_at_head) {
        s_.paused_at_head = false;
        begin_exchange();
      }
      continue;
    }
    // A malformed or over-limit request: answer and close; never forward an ambiguous message.
    int status = s_.error_status ? s_.error_status : 400;
    const char* code = status == 431 ? "headers_too_large"
                       : status == 414 ? "uri_too_long"
                       : status == 413 ? "body_too_large"
                                       : "bad_request";
    std::string msg = s_.error_status ? std::string(s_.error_code ? s_.error_code : "limit exceeded")
                                    : std::string("malformed request: ") + parser_.reason();
    if (s_.response_started) abort_exchange();
    else send_error(status, code, msg, true);
    break;
  }
  if (!outer) return;
  in_process_ = false;
  if (state_ == State::kForwarding && up_) {
    flush_upstream();
    if (s_.request_done) stop_reading();  // pipelined requests wait until this exchange ends
  } else if (state_ == State::kReadingHead) {
    if (!s_.message_begun && rbuf_.pending() == 0) go_idle();
    else start_reading();
  }
}

// ---- llhttp callbacks ----

const llhttp_settings_t* DownstreamConn::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = cb_message_begin;
    x.on_url = cb_url;
    x.on_header_field = cb_header_field;
    x.on_header_value = cb_header_value;
    x.on_headers_complete = cb_headers_complete;
    x.on_body = cb_body;
    x.on_message_complete = cb_message_complete;
    return x;
  }();
  return &s;
}

int DownstreamConn::cb_message_begin(llhttp_t* p) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  c->x_->req.clear();
  c->s_.message_begun = true;
  c->started_ns_ = uv_hrtime();
  c->state_ = State::kReadingHead;
  c->arm(ms(c->cfg_->client.header_timeout));
  return 0;
}

int DownstreamConn::cb_url(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  c->x_->req.add_url(at, n);
  if (c->x_->req.url().size() > c->cfg_->client.max_uri_bytes) {
    c->s_.error_status = 414;
    c->s_.error_code = "the request-target is longer than client.max_uri_bytes";
    return -1;
  }
  return 0;
}

int DownstreamConn::cb_header_field(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  c->x_->req.add_field(at, n);
  if (c->x_->req.count() > c->cfg_->client.max_headers) {
    c->s_.error_status = 431;
    c->s_.error_code = "more header fields than client.max_headers";
    return -1;
  }
  if (c->x_->req.bytes() > c->cfg_->client.max_header_bytes) {
    c->s_.error_status = 431;
    c->s_.error_code = "the request head is larger than client.max_header_bytes";
    return -1;
  }
  return 0;
}

int DownstreamConn::cb_header_value(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  // llhttp accepts obs-fold (a value continued on the next line after SP/HTAB, RFC 9112 §5.2)
  // and hands the continuation as another piece. A piece preceded by LF + whitespace is one.
  const char* q = at;
  while (q > c->rbuf_.data && (q[-1] == ' ' || q[-1] == '\t')) --q;
  if (q > c->rbuf_.data && q[-1] == '\n') return -1;
  c->x_->req.add_value(at, n);
  if (c->x_->req.bytes() > c->cfg_->client.max_header_bytes) {
    c->s_.error_status = 431;
    c->s_.error_code = "the request head is larger than client.max_header_bytes";
    return -1;
  }
  return 0;
}

int DownstreamConn::cb_headers_complete(llhttp_t* p) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  c->x_->req.http_major = p->http_major;
  c->x_->req.http_minor = p->http_minor;
  c->x_->req.method = p->method;
  if (!http::forwardable_request(c->x_->req, c->s_.looped)) return -1;
  if (p->flags & F_CHUNKED) {
    c->s_.req_framing = http::Framing::kChunked;
  } else if (p->flags & F_CONTENT_LENGTH) {
    c->s_.req_framing = http::Framing::kLength;
    c->s_.req_content_length = p->content_length;
    const uint64_t max = c->cfg_->client.max_body_bytes;
    if (max && p->content_length > max) {
      c->s_.error_status = 413;
      c->s_.error_code = "the request body is larger than client.max_body_bytes";
      return -1;
    }
  } else {
    c->s_.req_framing = http::Framing::kNone;
  }
  c->s_.upgrade = p->upgrade != 0;
  c->s_.paused_at_head = true;
  // A request with a body pauses here, so no body byte is consumed before an upstream exists.
  // One without a body runs on to its end first: then an early answer (404, 503) can keep the
  // connection, because the request is wholly read.
  return c->s_.req_framing == http::Framing::kNone ? 0 : HPE_PAUSED;
}

int DownstreamConn::cb_body(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  c->s_.body_in += n;
  const uint64_t max = c->cfg_->client.max_body_bytes;
  if (max && c->s_.body_in > max) {
    c->s_.error_status = 413;
    c->s_.error_code = "the request body is larger than client.max_body_bytes";
    return -1;
  }
  if (c->s_.replayable) {
    if (c->x_->replay.size() + n <= kReplayLimit) {
      c->x_->replay.append(at, n);
    } else {
      c->s_.replayable = false;  // streamed past the replay limit: this request is never replayed
      c->x_->replay.clear();
    }
  }
  if (!c->up_) return 0;
  net::OutBatch& out = c->up_->out();
  if (c->s_.req_framing == http::Framing::kChunked) http::append_chunk(out, at, n);
  else out.ref(at, n);
  return 0;
}

int DownstreamConn::cb_message_complete(llhttp_t* p) {
  auto* c = static_cast<DownstreamConn*>(p->data);
  c->s_.request_done = true;
  c->s_.paused_at_end = true;
  if (c->up_ && c->s_.req_framing == http::Framing::kChunked) http::append_last_chunk(c->up_->out());
  if (c->s_.upgrade) return 0;  // llhttp itself pauses with HPE_PAUSED_UPGRADE
  return HPE_PAUSED;
}

// ---- the exchange ----

void DownstreamConn::begin_exchange() {
  s_.head_done = true;
  // The header timer is left to run out: on_timer ignores it in the exchange's states, and not
  // stopping it saves a timer-heap operation per request.
  s_.table = w_.snapshot();
  cfg_ = s_.table->config;
  s_.is_head = x_->req.method == HTTP_HEAD;
  s_.idempotent = method_idempotent(x_->req.method);
  if (!parser_.keep_alive() || w_.shutting_down) close_after_ = true;
  s_.keep_alive_10 = x_->req.http_minor == 0 && !close_after_;

  if (s_.looped) {
    send_error(508, "loop_detected", "this request came back through this proxy (its Via carries our marker)", close_after_);
    return;
  }
  std::string_view host_header;
  x_->req.find("host", host_header);
  std::string& host = x_->host;  // pooled with the exchange: no allocation once it has grown
  http::normalize_host(host_header, host);
  std::string_view url = x_->req.url();
  const RouteEntry* route = nullptr;
  if (!s_.table->route(host, url, route, s_.upstreams)) {
    send_error(404, "no_route", "no route or service matches host '" + host + "'", close_after_);
    return;
  }
  if (!s_.upstreams || s_.upstreams->endpoints.empty()) {
    const std::string svc = route ? route->service : host;
    send_error(503, "no_healthy_upstream", "service '" + svc + "' has no healthy instance", close_after_);
    return;
  }
  if (route && route->strip_prefix && !route->path_prefix.empty()) {
    // What follows the prefix, always starting with '/'. (Built by appending: GCC 12 at -O3 warns
    // falsely, -Wrestrict, on std::string::insert at the front.)
    std::string_view rest = url.substr(std::min(url.size(), route->path_prefix.size()));
    x_->target.clear();
    if (rest.empty() || rest[0] != '/') x_->target.push_back('/');
    x_->target.append(rest);
  } else {
    x_->target.assign(url);
  }
  std::string_view rid;
  if (!x_->req.find("x-request-id", rid) || rid.empty()) {
    // 128 random bits as 32 hex digits (snprintf here cost more than the rest of the head).
    static constexpr char kHex[] = "0123456789abcdef";
    char buf[32];
    uint64_t a = w_.next_random(), b = w_.next_random();
    for (int i = 15; i >= 0; --i, a >>= 4, b >>= 4) {
      buf[i] = kHex[a & 15];
      buf[16 + i] = kHex[b & 15];
    }
    x_->request_id.assign(buf, 32);
  } else {
    x_->request_id.assign(rid);
  }
  s_.srt = s_.upstreams->runtime.get();
  if (s_.srt) {
    if (s_.srt->active_requests >= s_.upstreams->cfg->circuit_breaker.max_requests) {
      send_error(503, "overloaded", "service '" + s_.upstreams->service + "' is at circuit_breaker.max_requests", close_after_);
      return;
    }
    request_slot_.take(s_.srt->active_requests);
  }
  // Only idempotent requests are replayed after bytes reached a backend, and only when the whole
  // body fits in the replay buffer (RFC 9110 §9.2.2).
  s_.replayable = s_.idempotent && s_.upstreams->cfg->retry.attempts > 1 &&
                (s_.req_framing != http::Framing::kLength || s_.req_content_length <= kReplayLimit);
  start_attempt();
}

void DownstreamConn::start_attempt() {
  const int64_t now = static_cast<int64_t>(uv_now(w_.loop));
  lb::PickContext ctx;
  ctx.exclude_mask = s_.tried_mask;
  ctx.now_ns = static_cast<int64_t>(uv_hrtime());
  if (s_.upstreams->hash_on.kind != HashOn::Kind::kNone) {
    ctx.has_hash = request_hash(ctx.hash);
  }
  const Endpoint* chosen = nullptr;
  int chosen_idx = -1;
  // An instance whose breaker is half-open takes only its trial requests; try another then. In
  // panic routing every instance is out anyway: breakers are not asked (Envoy's panic mode).
  const size_t max_tries = std::min<size_t>(8, s_.upstreams->endpoints.size() + 2);
  for (size_t tries = 0; tries < max_tries && !chosen; ++tries) {
    ctx.random = w_.next_random();
    int idx = s_.upstreams->pick(ctx);
    if (idx < 0) break;
    const Endpoint& e = s_.upstreams->endpoints[static_cast<size_t>(idx)];
    if (e.runtime && !s_.upstreams->panic && !e.runtime->breaker.allow(now)) {
      if (idx < 64) ctx.exclude_mask |= uint64_t{1} << idx;
      continue;
    }
    chosen = &e;
    chosen_idx = idx;
  }
  if (!chosen) {
    send_error(503, "overloaded", "every instance of '" + s_.upstreams->service + "' is refusing requests (circuit breakers)", close_after_);
    return;
  }
  s_.endpoint = chosen;
  if (chosen_idx < 64) s_.tried_mask |= uint64_t{1} << chosen_idx;
  rt_ = chosen->runtime.get();
  s_.outcome_reported = false;
  if (rt_) {
    ++rt_->load.active;  // also switchyard_upstream_active_requests (Runtime::export_gauges)
  }
  connect_upstream(false);
}

bool DownstreamConn::request_hash(uint64_t& out) const {
  const HashOn& h = s_.upstreams->hash_on;
  std::string_view key;
  switch (h.kind) {
    case HashOn::Kind::kSourceIp:
      key = client_ip_;
      break;
    case HashOn::Kind::kHeader:
      if (!x_->req.find(h.name, key)) return false;
      break;
    case HashOn::Kind::kCookie: {
      std::string_view cookies;
      if (!x_->req.find("cookie", cookies)) return false;
      // "a=1; b=2": find NAME= at the start of a pair.
      while (!cookies.empty()) {
        size_t semi = cookies.find(';');
        std::string_view pair = cookies.substr(0, semi);
        while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
        if (pair.size() > h.name.size() && pair.substr(0, h.name.size()) == h.name && pair[h.name.size()] == '=') {
          key = pair.substr(h.name.size() + 1);
          break;
        }
        if (semi == std::string_view::npos) break;
        cookies.remove_prefix(semi + 1);
      }
      if (key.empty()) return false;
      break;
    }
    default:
      return false;
  }
  out = lb::hash_bytes(key.data(), key.size());
  return true;
}

void DownstreamConn::connect_upstream(bool fresh) {
  ++s_.attempts;
  state_ = State::kConnecting;
  stop_reading();
  if (!fresh) {
    if (UpstreamConn* c = w_.pool.take(s_.endpoint->uid)) {
      up_ = c;
      c->attach(this);
      send_request_head();
      return;
    }
  }
  const auto& cb = s_.upstreams->cfg->circuit_breaker;
  if (s_.srt) {
    // Past a limit the answer is an immediate 503: queues never grow without bound.
    if (*s_.srt->connections >= cb.max_connections || s_.srt->pending >= cb.max_pending) {
      report_outcome(health::Outcome::kNeutral);  // not the instance's fault: frees a half-open trial
      send_error(503, "overloaded", "service '" + s_.upstreams->service + "' is at its connection limits", close_after_);
      return;
    }
    pending_slot_.take(s_.srt->pending);
  }
  int err = 0;
  up_ = UpstreamConn::connect(w_.loop, w_.buffers, s_.endpoint->address, s_.endpoint->uid, s_.upstreams->cfg->timeouts.connect,
                              this, s_.srt ? s_.srt->connections : nullptr, &err);
  if (up_) return;
  pending_slot_.release();
  net::Resource r;
  if (net::is_exhaustion(err, r)) {
    // The proxy's own shortage: the instance is not blamed, and the client hears why.
    report_outcome(health::Outcome::kNeutral);
    if (w_.observer) w_.observer->on_exhaustion(r, std::string("upstream connect: ") + uv_strerror(err));
    send_error(503, "overloaded", std::string("switchyard is out of ") + (r == net::Resource::kFd ? "file descriptors" : "memory") +
                                      " (" + uv_strerror(err) + "); try again shortly", close_after_);
    return;
  }
  fail_attempt(upstream::UpstreamError::kConnectFailed);
}

void DownstreamConn::on_upstream_connected(UpstreamConn*) {
  pending_slot_.release();
  send_request_head();
}

void DownstreamConn::report_outcome(health::Outcome o) {
  if (s_.outcome_reported) return;
  s_.outcome_reported = true;
  if (!rt_) return;
  SY_ASSERT(s_.endpoint && s_.endpoint->runtime.get() == rt_);  // the attempt's endpoint holds its runtime
  w_.report(s_.endpoint->runtime, o);
}

void DownstreamConn::release_attempt() {
  pending_slot_.release();
  retry_slot_.release();
  if (rt_) {
    if (!s_.outcome_reported) report_outcome(health::Outcome::kNeutral);  // never judged: free its trial
    --rt_->load.active;
    rt_ = nullptr;
  }
}

void DownstreamConn::release_exchange() {
  release_attempt();
  request_slot_.release();
}

bool DownstreamConn::should_retry(bool named, bool connect_failure) const {
  if (!s_.upstreams) return false;
  FailedTry t;
  t.named = named;
  t.connect_failure = connect_failure;
  t.attempts_made = static_cast<uint32_t>(s_.attempts);
  t.head_sent = s_.head_sent;
  t.idempotent = s_.idempotent;
  t.request_done = s_.request_done;
  t.body_replayable = s_.req_framing == http::Framing::kNone || s_.replayable;
  t.shutting_down = w_.shutting_down;
  // (The budget is asked only when it matters: may_retry() ignores it for connect failures.)
  const bool budget = !s_.srt || connect_failure || health::Runtime::retry_allowed(*s_.srt, *s_.upstreams->cfg);
  return may_retry(s_.upstreams->cfg->retry, t, budget);
}

void DownstreamConn::schedule_retry() {
  const bool budgeted = s_.head_sent;  // see should_retry(): connect failures are not budgeted
  release_attempt();
  if (s_.srt && budgeted) retry_slot_.take(s_.srt->active_retries);
  state_ = State::kConnecting;
  stop_reading();
  s_.response_started = s_.response_done = s_.discarding = s_.discard_done = false;
  x_->to_client.clear();
  s_.backoff = true;
  arm(backoff_ms(s_.upstreams->cfg->retry, static_cast<uint32_t>(s_.attempts), w_.next_random()));
}

void DownstreamConn::fail_attempt(UpstreamError e) {
  report_outcome(outcome_of(e));
  if (should_retry(names(s_.upstreams->cfg->retry.on, e), is_connect_failure(e))) {
    schedule_retry();
    return;
  }
  const bool timeout = e == UpstreamError::kConnectTimeout || e == UpstreamError::kResponseTimeout ||
                       e == UpstreamError::kSendTimeout;
  std::string msg = std::string("upstream ") + (s_.endpoint ? s_.endpoint->address.text : "") + ": " + upstream::error_name(e);
  if (s_.attempts > 1) msg += " (after " + std::to_string(s_.attempts) + " attempts)";
  if (timeout) send_error(504, "upstream_timeout", msg, close_after_);
  else send_error(502, "upstream_failed", msg, close_after_);
}

void DownstreamConn::send_request_head() {
  state_ = State::kForwarding;
  http::RequestForward f;
  f.method = llhttp_method_name(static_cast<llhttp_method_t>(x_->req.method));
  f.target = x_->target;
  f.client_ip = client_ip_;
  f.request_id = x_->request_id;
  f.framing = s_.req_framing;
  f.content_length = s_.req_content_length;
  f.upgrade = s_.upgrade;
  // A replay (a retry after the body was consumed) sends the kept body with its length.
  const bool replay = s_.head_sent && s_.req_framing != http::Framing::kNone;
  if (replay) {
    f.framing = http::Framing::kLength;
    f.content_length = x_->replay.size();
  }
  net::OutBatch& out = up_->out();
  size_t from = out.begin_copy();
  http::build_upstream_request(x_->req, f, out.scratch());
  out.end_copy(from);
  if (replay) out.copy(x_->replay);
  s_.head_sent = true;
  attempt_started_ns_ = static_cast<int64_t>(uv_hrtime());
  // The response timer starts when the request's last byte is written (on_upstream_drained);
  // until then the client's pace is timed on this side, by client.body_timeout.
  up_->expect_response(s_.is_head, s_.upstreams->cfg->timeouts.idle);
  if (!s_.request_done) {
    body_quiet_since_ms_ = static_cast<int64_t>(uv_now(w_.loop));
    arm(ms(cfg_->client.body_timeout));
  }
  if (state_ != State::kForwarding) return;
  // Body bytes already read follow the head in the same write.
  process_input();
  if (state_ == State::kForwarding && up_) {
    flush_upstream();
    if (!s_.request_done && up_ && !up_->out().pending()) start_reading();
  }
}

void DownstreamConn::flush_upstream() {
  if (!up_ || up_->out().pending()) return;
  if (up_->out().empty()) return;
  s_.up_drained = false;
  up_->write();  // may report drained (or an error) before returning
  if (up_ && up_->out().pending()) stop_reading();  // backpressure: the backend is slower than the client
}

// timeouts.response for one try, or retry.per_try_timeout when that is set and shorter.
conf::Millis DownstreamConn::try_timeout() const {
  const auto& t = s_.upstreams->cfg->timeouts;
  const auto& r = s_.upstreams->cfg->retry;
  return r.per_try_timeout.count() > 0 ? std::min(t.response, r.per_try_timeout) : t.response;
}

void DownstreamConn::on_upstream_drained(UpstreamConn*) {
  s_.up_drained = true;
  if (state_ == State::kClosed) return;
  if (state_ == State::kForwarding && s_.request_done && up_) up_->request_sent(try_timeout());
  if (rbuf_.start == rbuf_.end) rbuf_.start = rbuf_.end = 0;
  if (state_ == State::kTunnel) {
    start_reading();
    return;
  }
  if (state_ == State::kForwarding && !s_.request_done) start_reading();
}

void DownstreamConn::on_upstream_head(UpstreamConn* c, const http::MessageHead& head) {
  const int st = head.status;
  http::ResponseForward f;
  size_t from = x_->to_client.begin_copy();
  if (st < 200 && st != 101) {
    // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they come.
    if (x_->req.http_minor >= 1) {
      http::build_downstream_response(head, f, x_->to_client.scratch());
      x_->to_client.end_copy(from);
    }
    return;
  }
  if (w_.observer && s_.endpoint) w_.observer->on_upstream_response(rt_, s_.upstreams->service, s_.endpoint->id, st);
  if (rt_) {
    const int64_t now_ns = static_cast<int64_t>(uv_hrtime());
    rt_->load.observe(now_ns, static_cast<double>(now_ns - attempt_started_ns_));
  }
  // A status counts against the instance only when circuit_breaker.on or outlier_detection.on
  // names it (by default 502/503/504: an application's 500 on one path is not the instance failing).
  const conf::Service& sc = *s_.upstreams->cfg;
  const bool judged = sc.circuit_breaker.on.has_status(st) || sc.outlier_detection.on.has_status(st);
  report_outcome(judged ? health::Outcome(health::Outcome::kStatus, st) : health::Outcome(health::Outcome::kSuccess));
  if (st >= 200 && should_retry(sc.retry.on.has_status(st), false)) {
    s_.discarding = true;  // read it to the end, throw it away, try elsewhere
    return;
  }
  s_.response_started = true;
  s_.status = st;
  if (st == 101) {
    if (!s_.upgrade) {
      abort_exchange();  // a 101 nobody asked for
      return;
    }
    f.upgrade = true;
    http::build_downstream_response(head, f, x_->to_client.scratch());
    x_->to_client.end_copy(from);
    state_ = State::kTunnel;
    c->start_tunnel();
    return;
  }
  if (s_.upgrade || !s_.request_done) close_after_ = true;  // the rest of the request is not ours to read
  const llhttp_t& p = c->parser();
  const bool client11 = x_->req.http_minor >= 1;
  uint64_t length = 0;
  if (s_.is_head || st == 204 || st == 304) {
    s_.resp_framing = http::Framing::kNone;
  } else if (p.flags & F_CHUNKED) {
    s_.resp_framing = client11 ? http::Framing::kChunked : http::Framing::kUntilClose;
  } else if (p.flags & F_CONTENT_LENGTH) {
    s_.resp_framing = http::Framing::kLength;
    length = p.content_length;
  } else {
    s_.resp_framing = client11 ? http::Framing::kChunked : http::Framing::kUntilClose;
  }
  if (s_.resp_framing == http::Framing::kUntilClose || w_.shutting_down) close_after_ = true;
  f.framing = s_.resp_framing;
  f.content_length = length;
  f.close = close_after_;
  f.keep_alive_10 = s_.keep_alive_10 && !close_after_;
  f.head_or_304 = s_.is_head || st == 304;
  http::build_downstream_response(head, f, x_->to_client.scratch());
  x_->to_client.end_copy(from);
}

void DownstreamConn::on_upstream_body(UpstreamConn*, const char* p, size_t n) {
  if (s_.discarding) return;
  s_.bytes_out += n;
  if (s_.resp_framing == http::Framing::kChunked && state_ != State::kTunnel) http::append_chunk(x_->to_client, p, n);
  else x_->to_client.ref(p, n);
}

void DownstreamConn::on_upstream_complete(UpstreamConn*) {
  if (s_.discarding) {
    s_.discard_done = true;
    return;
  }
  s_.response_done = true;
  if (s_.resp_framing == http::Framing::kChunked) http::append_last_chunk(x_->to_client);
}

int DownstreamConn::flush_client() {
  return x_->to_client.flush(reinterpret_cast<uv_stream_t*>(&sock_.tcp), on_client_write, this);
}

bool DownstreamConn::on_upstream_read_done(UpstreamConn*) {
  if (state_ == State::kClosed) return false;
  if (s_.discarding) {
    if (s_.discard_done) {
      if (up_) {
        if (s_.up_drained) up_->release(w_.pool, s_.upstreams->cfg->timeouts.idle);
        else up_->close();
        up_ = nullptr;
      }
      schedule_retry();
    }
    return false;
  }
  // The upstream's part is over: give the limit slots back before the client can see the last
  // byte, so its next request (on whichever worker) finds them free.
  if (s_.response_done && s_.request_done && state_ == State::kForwarding) release_exchange();
  int rc = flush_client();
  if (rc == net::OutBatch::kPending) return true;
  if (rc < 0) {
    abort_exchange();
    return false;
  }
  if (state_ == State::kTunnel) {
    // The 101 is out: bytes the client sent after its upgrade request go up now.
    if (rbuf_.pending() > 0 && up_) {
      up_->out().ref(rbuf_.data + rbuf_.start, rbuf_.pending());
      rbuf_.start = rbuf_.end;
      flush_upstream();
    } else if (s_.up_drained) {
      start_reading();
    }
    return false;
  }
  if (s_.response_done) finish_exchange();
  return false;
}

void DownstreamConn::on_client_write(uv_write_t* req, int status) {
  auto* c = static_cast<DownstreamConn*>(req->data);
  c->x_->to_client.done();
  if (c->state_ == State::kClosed) return;
  if (status < 0) {
    c->abort_exchange();
    return;
  }
  if (c->s_.response_done) {
    c->finish_exchange();
    return;
  }
  if (c->state_ == State::kTunnel && c->s_.up_drained) c->start_reading();
  if (c->up_) c->up_->resume_reading();
}

void DownstreamConn::on_upstream_error(UpstreamConn* c, UpstreamError e) {
  up_ = nullptr;  // `c` is closed already
  if (state_ == State::kClosed) return;
  if (state_ == State::kTunnel || s_.response_started) {
    report_outcome(outcome_of(e));
    // Nothing honest can be said to the client mid-response: truncate by closing.
    if (state_ == State::kTunnel && x_->to_client.pending()) close_after_ = true;
    abort_exchange();
    return;
  }
  pending_slot_.release();
  // A pooled connection the backend closed under us before any response byte: the request never
  // reached an application, so an idempotent one without a body goes once more on a fresh
  // connection to the same instance (not counted against the instance or the retry budget).
  if (c->reused() && !c->response_started() && e == UpstreamError::kReset && s_.idempotent &&
      s_.req_framing == http::Framing::kNone && !s_.stale_retried) {
    s_.stale_retried = true;
    --s_.attempts;
    connect_upstream(true);
    return;
  }
  fail_attempt(e);
}

void DownstreamConn::send_error(int status, const char* code, const std::string& message, bool close_conn) {
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  s_.status = status;
  s_.error_code = code;
  s_.response_started = true;
  s_.response_done = true;
  if (!s_.request_done || close_conn) close_after_ = true;
  if (close_after_) stop_reading();
  if (x_->to_client.pending()) {  // an interim response is still going out; the error follows it
    close_after_ = true;
    return;
  }
  size_t from = x_->to_client.begin_copy();
  http::build_error_response(status, code, message, close_after_, x_->to_client.scratch());
  x_->to_client.end_copy(from);
  int rc = flush_client();
  if (rc == net::OutBatch::kPending) return;
  if (rc < 0) {
    close();
    return;
  }
  finish_exchange();
}

void DownstreamConn::abort_exchange() {
  record("aborted");
  close();
}

void DownstreamConn::finish_exchange() {
  record(s_.error_code);
  release_exchange();
  if (up_) {
    if (s_.request_done && s_.up_drained) up_->release(w_.pool, s_.upstreams->cfg->timeouts.idle);
    else up_->close();
    up_ = nullptr;
  }
  if (close_after_ || s_.upgrade) {
    // Linger only when the client may still be sending (its request not wholly read, or bytes
    // behind it): closing then would answer those bytes with a reset. Otherwise close at once.
    if (!s_.request_done || rbuf_.pending() > 0) linger_close();
    else close();
    return;
  }
  reset_for_next();
}

void DownstreamConn::reset_for_next() {
  x_->req.clear();
  x_->replay.clear();
  if (x_->replay.capacity() > 4096) x_->replay.shrink_to_fit();  // idle connections keep no 64 KiB buffer
  s_ = {};
  state_ = State::kReadingHead;
  if (in_process_) return;  // the parsing loop below us goes on with the next request
  if (rbuf_.pending() > 0) {
    // A pipelined request is already here.
    arm(ms(cfg_->client.header_timeout));
    process_input();
    return;
  }
  go_idle();
}

void DownstreamConn::go_idle() {
  // Idle keep-alive: give the read buffer and the exchange storage back, so idle clients cost
  // only their connection object.
  w_.buffers.release(rbuf_.data);
  rbuf_ = {};
  if (x_) {
    x_->req.clear();
    x_->to_client.clear();
    x_->replay.clear();
    w_.exchanges.release(std::move(x_));
  }
  state_ = State::kIdle;
  arm(ms(cfg_->client.idle_timeout));
  start_reading();
}

void DownstreamConn::record(const char* error) {
  if (!w_.observer || !s_.head_done || !x_) return;
  ExchangeObserver::Record r;
  r.client = client_ip_;
  r.method = llhttp_method_name(static_cast<llhttp_method_t>(x_->req.method));
  r.path = x_->req.url();
  x_->req.find("host", r.host);
  r.status = s_.status;
  r.bytes_in = s_.body_in;
  r.bytes_out = s_.bytes_out;
  r.seconds = static_cast<double>(uv_hrtime() - started_ns_) / 1e9;
  r.service = s_.upstreams ? std::string_view(s_.upstreams->service) : std::string_view();
  r.instance = s_.endpoint ? std::string_view(s_.endpoint->id) : std::string_view();
  r.attempts = s_.attempts;
  r.request_id = x_->request_id;
  r.error = error ? error : "";
  r.service_stats = s_.upstreams && s_.upstreams->runtime ? s_.upstreams->runtime->stats : nullptr;
  w_.observer->on_exchange(r);
  s_.head_done = false;  // once per exchange
}

}  // namespace sy::server
