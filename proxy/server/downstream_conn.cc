// DownstreamConn: accept, reading and the request parser, keep-alive and pipelining, client-side
// timeouts, writing to the client, lingering close, shutdown (see downstream_conn.h). Each exchange
// is its ProxyStream's (proxy_stream.cc).
#include "proxy/server/downstream_conn.h"
#include "proxy/net/assert.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>

#include "proxy/http/chunked.h"
#include "proxy/http/grpc.h"
#include "proxy/net/close.h"
#include "proxy/server/h2_session.h"

namespace sy::server {

using upstream::UpstreamConn;
using upstream::UpstreamError;

namespace {

// Lingering close, as nginx's lingering_timeout / lingering_time: input is discarded until the
// client has been silent for kLingerIdleMs, or for kLingerTotalMs at most. A fixed short linger
// reset clients still pushing a large upload on a slow machine before they had read our answer.
constexpr int64_t kLingerIdleMs = 5000;
constexpr int64_t kLingerTotalMs = 30000;
// A keep-alive client over TLS quiet this long between requests gives back its TLS record buffers
// and output storage (TcpConn::trim_tls); a busy one keeps them from one request to the next.
constexpr int64_t kQuietMs = 100;

}  // namespace

// ---- lifecycle ----

DownstreamConn::DownstreamConn(Worker& w) : w_(w) {
  sock_.init(w.loop, this, w.buffers);
  parser_.init(HTTP_REQUEST, ProxyStream::settings(), &stream_);  // the request's callbacks are the stream's
}

DownstreamConn::~DownstreamConn() = default;

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
  const auto& snap = w.snapshot();
  c->cfg_ = snap->config;
  // This listener's options and TLS, if it has any (worker listeners are opened in config order).
  const void* l = server->data;
  for (size_t i = 0; i < w.listeners.size(); ++i) {
    if (w.listeners[i].get() != l) continue;
    if (i < c->cfg_->listen_tls.size()) c->http2_allowed_ = c->cfg_->listen_tls[i].http2;
    if (snap->tls && i < snap->tls->listeners.size() && snap->tls->listeners[i]) {
      const auto& t = snap->tls->listeners[i];
      if (auto session = net::TlsSession::server(*t)) {
        c->tls_ = t.get();
        c->sock_.start_tls(std::move(session), t, on_tls);
      }
    }
    break;
  }
  c->state_ = State::kIdle;
  c->arm(c->cfg_->client.header_timeout);
  // The request usually arrives with the connection (see TcpConn::read_now): a connection that
  // closes after one exchange is then never registered with epoll at all.
  if (!c->sock_.read_now(on_read)) c->start_reading();
  // A partial head needs more bytes: watch the socket now. (Later states arm it when they want.)
  else if (c->state_ != State::kClosed && c->sock_.read_wanted()) c->start_reading();
}

void DownstreamConn::shutdown() {
  close_after_ = true;
  if (h2_) {
    h2_->shutdown("shutdown");  // GOAWAY: the streams taken finish, then the connection closes
    return;
  }
  if (state_ == State::kIdle) close();
}

void DownstreamConn::config_reloaded() {
  if (h2_) h2_->shutdown("reload");
}

void DownstreamConn::close_now() {
  if (state_ == State::kClosed) return;
  if (h2_) {
    h2_->close_all("shutdown_timeout");
    close();
    return;
  }
  ProxyStream& st = stream_;
  if (st.x_ && st.s_->head_done) {
    const bool answered = st.answered();
    if (!answered) {
      std::string out;
      http::build_error_response(503, "shutting_down",
                                 "switchyard is shutting down and shutdown_timeout ran out before an answer came", true, out);
      st.s_->status = 503;
      if (sock_.send(out)) st.s_->bytes_out += out.size();
    }
    st.record(answered ? "shutdown_timeout" : "shutting_down");
  }
  close();
}

void DownstreamConn::close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (h2_) h2_->on_conn_close();
  stream_.drop_upstream();
  stream_.release_exchange();
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
  stream_.drop_upstream();
  state_ = State::kLingering;
  sock_.discard();
  if (!sock_.shutdown_write(on_shutdown)) {
    close();
    return;
  }
  body_quiet_since_ms_ = static_cast<int64_t>(uv_now(w_.loop));  // from here: when lingering began
  arm(kLingerIdleMs);
  start_reading();
}

void DownstreamConn::on_shutdown(void* owner, int status) {
  auto* c = static_cast<DownstreamConn*>(owner);
  if (status < 0 && c->state_ == State::kLingering) c->close();
}

void DownstreamConn::on_tls(void* owner, bool ok) {
  auto* c = static_cast<DownstreamConn*>(owner);
  const net::TlsSession& s = *c->sock_.tls();
  if (c->w_.observer) c->w_.observer->on_tls_handshake(*c->tls_, s, ok);
  if (ok && c->tls_->client_cert) c->client_cert_ = s.peer_cert_xfcc();
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
    case State::kHttp2:
      c->h2_->on_timer();
      return;
    case State::kIdle:
      if (c->quiet_due_) {
        c->quiet_due_ = false;
        c->sock_.trim_tls();
        c->arm(c->cfg_->client.idle_timeout.count() - kQuietMs);  // the rest of the idle wait
        return;
      }
      c->close();  // idle keep-alive (or a connection that never sent a byte)
      return;
    case State::kLingering:
      c->close();  // linger over
      return;
    case State::kReadingHead:
      c->stream_.send_error(408, "request_timeout", "the request head did not arrive within client.header_timeout", true);
      return;
    case State::kConnecting:
      if (c->stream_.s_->backoff) c->stream_.on_backoff_over();
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
  const ProxyStream::ExchangeState& s = *stream_.s_;
  if (s.request_done || !s.head_done) return;  // (a header timer left to run out)
  const int64_t now = static_cast<int64_t>(uv_now(w_.loop));
  const int64_t limit = cfg_->client.body_timeout.count();
  const int64_t quiet = sock_.read_wanted() ? now - body_quiet_since_ms_ : 0;
  if (quiet < limit) {
    arm(limit - quiet);
    return;
  }
  if (s.response_started) {
    stream_.abort();  // the answer is already on its way: nothing else can be said
    return;
  }
  stream_.send_error(408, "request_timeout", "no request body bytes for client.body_timeout", true);
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
    // (Input is discarded: TcpConn::discard.) Each read restarts the idle window, within the cap.
    const int64_t lingered = static_cast<int64_t>(uv_now(c->w_.loop)) - c->body_quiet_since_ms_;
    if (n < 0 || lingered >= kLingerTotalMs) c->close();
    else c->arm(std::min(kLingerIdleMs, kLingerTotalMs - lingered));
    return;
  }
  if (n == UV_ENOBUFS && c->w_.observer) c->w_.observer->on_exhaustion(net::Resource::kMemory, "no read buffer for a client");
  if (n < 0) {
    // The client went away (or half-closed). Nothing more will come: finish nothing, drop all.
    if (c->state_ == State::kForwarding && c->stream_.s_->request_done && n == UV_EOF) {
      c->stop_reading_now();  // a half-close after a complete request: let the response finish
      c->close_after_ = true;
      return;
    }
    if (c->state_ == State::kForwarding || c->state_ == State::kTunnel || c->state_ == State::kConnecting) c->stream_.record("client_closed");
    c->close();
    return;
  }
  c->body_quiet_since_ms_ = static_cast<int64_t>(uv_now(c->w_.loop));
  if (c->state_ == State::kHttp2 || (c->http2_allowed_ && c->maybe_http2())) {
    if (c->state_ != State::kHttp2) return;  // a preface's first bytes: wait for the rest
    net::ReadBuffer& rb = c->sock_.rbuf;
    const size_t n = rb.pending();
    rb.start = rb.end;  // the session takes every byte (it keeps what a frame still lacks)
    c->h2_->on_input(rb.data + rb.end - n, n);
    // (Its TLS buffers go back when the session has been quiet a while: H2Session::on_timer.)
    if (c->state_ != State::kClosed && c->sock_.rbuf.pending() == 0) c->sock_.release_buffer_if_empty();
    return;
  }
  c->stream_.take_storage();
  if (c->state_ == State::kTunnel) {
    c->stream_.relay_tunnel_input();
    return;
  }
  if (c->state_ == State::kIdle) {
    c->follow_config();
    c->state_ = State::kReadingHead;  // cb_message_begin arms the header timer
  }
  c->process_input();
}

void DownstreamConn::follow_config() {
  // After a reload the next exchange runs under the new client limits and timeouts (one pointer
  // comparison per exchange; the copy only when it changed).
  if (const auto& snap = w_.snapshot(); snap && snap->config != cfg_) cfg_ = snap->config;
}

bool DownstreamConn::maybe_http2() {
  static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";  // RFC 9113 §3.4
  const net::ReadBuffer& rb = sock_.rbuf;
  const std::string_view got(rb.data + rb.start, rb.pending());
  const net::TlsSession* t = sock_.tls();
  const bool alpn_h2 = t && t->alpn_view() == "h2";
  if (!alpn_h2) {
    // Prior knowledge (gRPC, curl --http2-prior-knowledge): the preface, compared as it arrives.
    const size_t k = std::min(got.size(), kPreface.size());
    if (got.substr(0, k) != kPreface.substr(0, k)) {
      http2_allowed_ = false;  // HTTP/1.1 from here on
      return false;
    }
    if (got.size() < kPreface.size()) {
      start_reading();
      return true;
    }
  }
  http2_allowed_ = false;
  h2_ = std::make_unique<H2Session>(w_, *this);
  if (!h2_->start()) {
    if (w_.observer) w_.observer->on_exhaustion(net::Resource::kMemory, "no HTTP/2 session for a client");
    close();
    return true;
  }
  state_ = State::kHttp2;
  h2_->idle_check();  // client.idle_timeout until its first stream (stopped while streams run)
  start_reading();
  return true;
}

void DownstreamConn::process_input() {
  // reset_for_next() may run inside this loop (an error answered at once); the outermost call
  // then carries on with the next pipelined request instead of recursing.
  const bool outer = !in_process_;
  in_process_ = true;
  ProxyStream::ExchangeState& s = *stream_.s_;  // (reset in place: the reference stays good)
  while (state_ != State::kClosed && sock_.rbuf.pending() > 0) {
    if (state_ == State::kConnecting || state_ == State::kTunnel || s.paused_at_end) break;
    const char* begin = sock_.rbuf.data + sock_.rbuf.start;
    const http::Fed fed = parser_.feed(begin, sock_.rbuf.pending());
    if (state_ == State::kClosed) break;
    if (fed.kind == http::Fed::Kind::kAll) {
      sock_.rbuf.start = sock_.rbuf.end;
      break;
    }
    if (fed.kind != http::Fed::Kind::kError) {  // paused (resumed already) or upgrade
      sock_.rbuf.start += fed.used;
      if (s.paused_at_head) {
        s.paused_at_head = false;
        stream_.begin();
      }
      continue;
    }
    // A malformed or over-limit request: answer and close; never forward an ambiguous message.
    int status = s.error_status ? s.error_status : 400;
    const char* code = status == 431 ? "headers_too_large"
                       : status == 414 ? "uri_too_long"
                       : status == 413 ? "body_too_large"
                                       : "bad_request";
    std::string msg = s.error_status ? std::string(s.error_code ? s.error_code : "limit exceeded")
                                    : std::string("malformed request: ") + parser_.reason();
    if (s.response_started) stream_.abort();
    else stream_.send_error(status, code, msg, true);
    break;
  }
  if (!outer) return;
  in_process_ = false;
  if (state_ == State::kForwarding && s.up) {
    stream_.flush_upstream();
    if (s.request_done) stop_reading();  // pipelined requests wait until this exchange ends
  } else if (state_ == State::kReadingHead) {
    if (!s.message_begun && sock_.rbuf.pending() == 0) go_idle();
    else start_reading();
  }
}

// ---- writing to the client: HTTP/1.1 framing into the exchange's OutBatch ----

void DownstreamConn::out_interim(const http::MessageHead& head, http::ResponseForward& f) {
  if (stream_.x_->req.http_minor < 1) return;  // (an HTTP/1.0 client knows no 1xx)
  net::OutBatch& out = stream_.x_->to_client;
  size_t from = out.begin_copy();
  http::build_downstream_response(head, f, out.scratch());
  out.end_copy(from);
}

void DownstreamConn::out_head(const http::MessageHead& head, http::ResponseForward& f) {
  net::OutBatch& out = stream_.x_->to_client;
  size_t from = out.begin_copy();
  http::build_downstream_response(head, f, out.scratch());
  out.end_copy(from);
}

void DownstreamConn::out_body(const char* p, size_t n) {
  net::OutBatch& out = stream_.x_->to_client;
  if (stream_.s_->resp_framing == http::Framing::kChunked && state_ != State::kTunnel) http::append_chunk(out, p, n);
  else out.ref(p, n);  // the upstream's read buffer stays put until this is written
}

void DownstreamConn::out_trailers(const http::MessageHead& head, size_t first) {
  if (stream_.s_->resp_framing != http::Framing::kChunked) return;
  std::string lines;
  http::append_trailer_lines(head, first, lines);
  if (lines.empty()) return;
  http::append_last_chunk(stream_.x_->to_client, lines);
  stream_.s_->last_chunk_sent = true;
}

void DownstreamConn::out_end() {
  if (stream_.s_->resp_framing == http::Framing::kChunked && !stream_.s_->last_chunk_sent)
    http::append_last_chunk(stream_.x_->to_client);
}

bool DownstreamConn::out_error(int status, std::string_view code, std::string_view message, std::string_view extra,
                               int grpc_status) {
  net::OutBatch& out = stream_.x_->to_client;
  if (out.pending()) return false;
  size_t from = out.begin_copy();
  if (grpc_status >= 0) http::build_grpc_error_response(grpc_status, code, message, close_after_, out.scratch(), extra);
  else http::build_error_response(status, code, message, close_after_, out.scratch(), extra);
  out.end_copy(from);
  return true;
}

bool DownstreamConn::out_begun() const {
  const net::OutBatch& out = stream_.x_->to_client;
  return !out.empty() || out.pending();
}

std::string_view DownstreamConn::protocol() const {
  return stream_.x_ && stream_.x_->req.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
}

int DownstreamConn::flush_client() {
  return stream_.x_->to_client.flush(sock_, on_client_write, this);
}

void DownstreamConn::on_client_write(uv_write_t* req, int status) {
  auto* c = static_cast<DownstreamConn*>(req->data);
  ProxyStream& st = c->stream_;
  st.x_->to_client.done();
  if (c->state_ == State::kClosed) return;
  if (status < 0) {
    st.abort();
    return;
  }
  if (st.s_->response_done) {
    c->finish_exchange();
    return;
  }
  if (c->state_ == State::kTunnel && st.s_->up_drained) c->start_reading();
  if (st.s_->up) st.s_->up->resume_reading();
}

// ---- between exchanges ----

void DownstreamConn::finish_exchange() {
  stream_.finish();
  const ProxyStream::ExchangeState& s = *stream_.s_;
  if (close_after_ || s.upgrade) {
    // Linger only when the client may still be sending (its request not wholly read, or bytes
    // behind it): closing then would answer those bytes with a reset. Otherwise close at once.
    if (!s.request_done || sock_.rbuf.pending() > 0) linger_close();
    else close();
    return;
  }
  reset_for_next();
}

void DownstreamConn::reset_for_next() {
  stream_.reset();
  follow_config();
  state_ = State::kReadingHead;
  if (in_process_) return;  // the parsing loop below us goes on with the next request
  if (sock_.rbuf.pending() > 0) {
    // A pipelined request is already here.
    arm(cfg_->client.header_timeout);
    process_input();
    return;
  }
  go_idle();
}

void DownstreamConn::go_idle() {
  // Idle keep-alive: give the read buffer and the exchange storage back, so idle clients cost only
  // their connection object; TLS's record buffers follow kQuietMs into the idle wait (on_timer).
  SY_ASSERT(sock_.rbuf.pending() == 0);
  sock_.release_buffer_if_empty();
  stream_.give_storage();
  state_ = State::kIdle;
  const int64_t idle = cfg_->client.idle_timeout.count();
  quiet_due_ = sock_.tls() != nullptr && idle > kQuietMs;
  arm(quiet_due_ ? kQuietMs : idle);
  start_reading();
}

}  // namespace sy::server
