// DownstreamConn, the connection half: accept, reading and the request parser, keep-alive and
// pipelining, timeouts, lingering close, shutdown, the access-log record. One exchange at a time is
// driven by the stream half (proxy_stream.cc); retry decisions are retry_state's.
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

}  // namespace

// ---- lifecycle ----

DownstreamConn::DownstreamConn(Worker& w) : w_(w) {
  sock_.init(w.loop, this, w.buffers);
  parser_.init(HTTP_REQUEST, settings(), this);
}

DownstreamConn::~DownstreamConn() {
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
  // The request usually arrives with the connection (see TcpConn::read_now): a connection that
  // closes after one exchange is then never registered with epoll at all.
  if (!c->sock_.read_now(on_read)) c->start_reading();
  // A partial head needs more bytes: watch the socket now. (Later states arm it when they want.)
  else if (c->state_ != State::kClosed && c->sock_.read_wanted()) c->start_reading();
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
  sock_.discard();
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
  const int64_t quiet = sock_.read_wanted() ? now - body_quiet_since_ms_ : 0;
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
  if (state_ == State::kClosed) return;
  if (!sock_.read_wanted()) body_quiet_since_ms_ = static_cast<int64_t>(uv_now(w_.loop));  // silence so far was ours
  sock_.read_start(on_read);
}

// Lazy (TcpConn::read_pause): a client waiting for its answer costs no epoll_ctl.
void DownstreamConn::stop_reading() { sock_.read_pause(); }

void DownstreamConn::stop_reading_now() { sock_.read_stop(); }

void DownstreamConn::on_read(uv_stream_t* s, ssize_t n) {
  auto* c = static_cast<DownstreamConn*>(s->data);
  if (c->state_ == State::kClosed) return;
  if (c->state_ == State::kLingering) {
    if (n < 0) c->close();  // (input is discarded: TcpConn::discard)
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
  c->body_quiet_since_ms_ = static_cast<int64_t>(uv_now(c->w_.loop));
  c->take_exchange();
  if (c->state_ == State::kTunnel) {
    if (c->up_) {
      c->up_->out().ref(c->sock_.rbuf.data + c->sock_.rbuf.start, c->sock_.rbuf.pending());
      c->sock_.rbuf.start = c->sock_.rbuf.end;
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
  while (state_ != State::kClosed && sock_.rbuf.pending() > 0) {
    if (state_ == State::kConnecting || state_ == State::kTunnel || s_.paused_at_end) break;
    const char* begin = sock_.rbuf.data + sock_.rbuf.start;
    const http::Fed fed = parser_.feed(begin, sock_.rbuf.pending());
    if (state_ == State::kClosed) break;
    if (fed.kind == http::Fed::Kind::kAll) {
      sock_.rbuf.start = sock_.rbuf.end;
      break;
    }
    if (fed.kind != http::Fed::Kind::kError) {  // paused (resumed already) or upgrade
      sock_.rbuf.start += fed.used;
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
    if (!s_.message_begun && sock_.rbuf.pending() == 0) go_idle();
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
  while (q > c->sock_.rbuf.data && (q[-1] == ' ' || q[-1] == '\t')) --q;
  if (q > c->sock_.rbuf.data && q[-1] == '\n') return -1;
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
    if (!s_.request_done || sock_.rbuf.pending() > 0) linger_close();
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
  if (sock_.rbuf.pending() > 0) {
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
  sock_.drop_buffer();
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
