// UpstreamConn: connect, request out, response in (llhttp), idle watch in the pool.
#include "proxy/upstream/upstream_conn.h"
#include "proxy/net/assert.h"

#include <algorithm>

#include "proxy/http/chunked.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/close.h"
#include "proxy/upstream/pool.h"

namespace sy::upstream {

namespace {

constexpr size_t kMaxResponseHead = 64 * 1024;
constexpr int64_t kNoDeadline = INT64_MAX;

}  // namespace

const char* error_name(UpstreamError e) {
  switch (e) {
    case UpstreamError::kConnectFailed: return "connect-failure";
    case UpstreamError::kConnectTimeout: return "connect-timeout";
    case UpstreamError::kReset: return "reset";
    case UpstreamError::kResponseTimeout: return "timeout";
    case UpstreamError::kIdleTimeout: return "idle-timeout";
    case UpstreamError::kSendTimeout: return "send-timeout";
    case UpstreamError::kBadResponse: return "bad-response";
    case UpstreamError::kTlsFailed: return "tls-failure";
    case UpstreamError::kRefused: return "refused-stream";
  }
  return "?";
}

UpstreamConn::UpstreamConn(uv_loop_t* loop, net::BufferPool& buffers) {
  sock_.init(loop, this, buffers);
  connect_req_.data = this;
  parser_.init(HTTP_RESPONSE, settings(), this);
}

UpstreamConn* UpstreamConn::connect(uv_loop_t* loop, net::BufferPool& buffers, const conf::Address& addr,
                                    uint64_t uid, conf::Millis connect_timeout, UpstreamOwner* owner,
                                    std::shared_ptr<std::atomic<uint32_t>> open_count, int* error, TlsTarget* tls) {
  auto* c = new UpstreamConn(loop, buffers);
  if (tls) c->tls_ = std::make_unique<TlsTarget>(std::move(*tls));
  if (open_count) {
    ++*open_count;
    c->open_count_ = std::move(open_count);
  }
  c->owner_ = owner;
  c->address_ = addr;
  c->uid_ = uid;
  c->state_ = State::kConnecting;
  int rc = uv_tcp_connect(&c->connect_req_, &c->sock_.tcp, addr.sa(), on_connect);
  if (rc < 0) {
    if (error) *error = rc;
    c->owner_ = nullptr;
    c->close();
    return nullptr;
  }
  c->arm(connect_timeout.count());
  return c;
}

void UpstreamConn::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<UpstreamConn*>(req->data);
  if (c->state_ == State::kClosed) return;
  if (status < 0) {
    c->fail(UpstreamError::kConnectFailed);
    return;
  }
  uv_tcp_nodelay(&c->sock_.tcp, 1);
  if (c->tls_) {
    // The handshake is part of connecting: the connect timer keeps running, and a handshake that
    // fails is a connect failure.
    std::string why;
    if (!c->tls_->start(c->sock_, on_tls, {}, why)) {
      c->tls_failed(why);
      return;
    }
    c->sock_.read_start(on_read);
    return;
  }
  c->connected();
}

void UpstreamConn::connected() {
  state_ = State::kActive;
  uv_timer_stop(&sock_.timer);
  if (owner_) owner_->on_upstream_connected(this);
}

void UpstreamConn::on_tls(void* owner, bool ok) {
  auto* c = static_cast<UpstreamConn*>(owner);
  if (c->state_ != State::kConnecting) return;
  if (ok) c->connected();
  else c->tls_failed(c->sock_.tls()->error());
}

void UpstreamConn::tls_failed(const std::string& why) {
  tls_error_ = why;
  const net::TlsSession* s = sock_.tls();
  tls_reason_ = s ? s->failure_reason() : "handshake_failed";
  fail(UpstreamError::kTlsFailed);
}

void UpstreamConn::attach(UpstreamOwner* owner) {
  owner_ = owner;
  sock_.keep();  // input is the response again, no longer a sign to close
  // Reading stays armed (no epoll_ctl): the owner writes the request and calls expect_response()
  // before the loop runs again, so no byte can arrive in between unparsed.
  state_ = State::kActive;  // the pool's idle timer is re-armed by expect_response()
}

void UpstreamConn::send_head(const http::MessageHead& req, const http::RequestForward& f) {
  chunked_ = f.framing == http::Framing::kChunked;
  const size_t from = out_.begin_copy();
  http::build_upstream_request(req, f, out_.scratch());
  out_.end_copy(from);
}

void UpstreamConn::send_body(const char* p, size_t n, bool copy) {
  if (copy) {
    // (The one chunk writer, told to copy what it would refer to.)
    struct Copying {
      net::OutBatch& out;
      void copy(std::string_view s) { out.copy(s); }
      void ref(const char* d, size_t len) { out.copy(std::string_view(d, len)); }
    } c{out_};
    if (chunked_) http::append_chunk(c, p, n);
    else out_.copy(std::string_view(p, n));
    return;
  }
  if (chunked_) http::append_chunk(out_, p, n);
  else out_.ref(p, n);
}

void UpstreamConn::send_end(std::string_view trailer_lines) {
  if (chunked_) http::append_last_chunk(out_, trailer_lines);
}

bool UpstreamConn::response_length(uint64_t& n) const {
  const llhttp_t& p = parser_.raw();
  if ((p.flags & F_CHUNKED) || !(p.flags & F_CONTENT_LENGTH)) return false;
  n = p.content_length;
  return true;
}

void UpstreamConn::write() {
  int rc = out_.flush(sock_, on_write, this);
  if (rc == net::OutBatch::kPending) {
    write_since_ms_ = static_cast<int64_t>(uv_now(sock_.tcp.loop));
    return;
  }
  if (rc < 0) {
    fail(UpstreamError::kReset);
    return;
  }
  if (owner_) owner_->on_upstream_drained(this);
}

void UpstreamConn::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<UpstreamConn*>(req->data);
  c->out_.done();
  if (c->state_ == State::kClosed) return;
  if (status < 0) {
    c->fail(UpstreamError::kReset);
    return;
  }
  if (c->owner_) c->owner_->on_upstream_drained(c);
}

void UpstreamConn::expect_response(bool head_request, conf::Millis idle_timeout) {
  parser_.init(HTTP_RESPONSE, settings(), this);
  head_request_ = head_request;
  response_started_ = false;
  response_done_ = false;
  awaiting_head_ = true;
  reusable_ = true;
  idle_ms_ = idle_timeout.count();
  last_read_ms_ = static_cast<int64_t>(uv_now(sock_.tcp.loop));
  response_deadline_ms_ = kNoDeadline;
  // A pooled connection's idle timer is still armed; a fresh one has none. Either way on_timer()
  // works out what applies when it fires; request_sent() (a timer start per request) sets the
  // real limit, and until then only a backend that refuses request bytes is timed.
  if (state_ == State::kActive && !uv_is_active(reinterpret_cast<uv_handle_t*>(&sock_.timer))) arm(idle_ms_);
  resume_reading();
}

void UpstreamConn::request_sent(conf::Millis response_timeout) {
  if (state_ != State::kActive || !awaiting_head_ || response_deadline_ms_ != kNoDeadline) return;
  // One timer for the whole response: it fires at the earlier of the two limits and on_timer()
  // works out which applies, so nothing is re-armed when the head or body bytes arrive.
  response_deadline_ms_ = static_cast<int64_t>(uv_now(sock_.tcp.loop)) + response_timeout.count();
  arm(std::min(response_timeout.count(), idle_ms_));
}

void UpstreamConn::pause_reading() {
  // Lazily: most pauses end within this loop turn (an HTTP/2 client's frames go out at its end),
  // and a stop + start costs two epoll_ctl calls per response. Should the backend send more
  // meanwhile (the client really is slower), reading stops for real at those bytes, which stay
  // in the kernel: the back-pressure holds either way.
  sock_.read_pause();
  read_paused_ = true;
}

void UpstreamConn::resume_reading() {
  read_paused_ = false;
  if (state_ == State::kClosed) return;
  sock_.read_start(on_read);
  // Bytes parked behind a pause are parsed now.
  if (state_ == State::kActive && sock_.rbuf.pending() > 0 && !response_done_) parse();
}

void UpstreamConn::start_tunnel() {
  state_ = State::kTunnel;
  uv_timer_stop(&sock_.timer);
}

void UpstreamConn::release(Pool& pool, conf::Millis idle_timeout) {
  if (state_ != State::kActive || !reusable_ || !response_done_ || sock_.rbuf.pending() > 0 || out_.pending()) {
    close();
    return;
  }
  owner_ = nullptr;
  state_ = State::kIdle;
  reused_ = true;
  // Idle: any byte or EOF means "close it", and needs no buffer. Over TLS the records are still
  // read (a session ticket or key update is no reason to close); only plaintext or the end is.
  if (!tls_) sock_.discard();
  sock_.release_if_empty();  // (nothing is pending: checked above)
  pool.put(this);
  arm(idle_timeout.count());
  sock_.read_start(on_read);
}

void UpstreamConn::close() {
  if (state_ == State::kClosed) return;
  if (pool_) pool_->remove(this);
  state_ = State::kClosed;
  owner_ = nullptr;
  if (open_count_) {
    --*open_count_;
    open_count_.reset();
  }
  uv_timer_stop(&sock_.timer);
  sock_.close(on_gone);
}

void UpstreamConn::on_gone(void* owner) { delete static_cast<UpstreamConn*>(owner);
}

void UpstreamConn::fail(UpstreamError e) {
  if (state_ == State::kClosed) return;
  UpstreamOwner* o = owner_;
  close();
  if (o) o->on_upstream_error(this, e);
}

void UpstreamConn::arm(int64_t ms) {
  deadline_ms_ = static_cast<int64_t>(uv_now(sock_.tcp.loop)) + ms;
  uv_timer_start(&sock_.timer, on_timer, static_cast<uint64_t>(ms), 0);
}

void UpstreamConn::on_timer(uv_timer_t* t) {
  auto* c = static_cast<UpstreamConn*>(t->data);
  const int64_t now = static_cast<int64_t>(uv_now(t->loop));
  switch (c->state_) {
    case State::kConnecting:
      c->fail(UpstreamError::kConnectTimeout);
      return;
    case State::kIdle:
      c->close();
      return;
    case State::kActive: {
      if (c->response_done_) return;  // waiting to be released or closed: nothing to time
      if (c->awaiting_head_ && c->response_deadline_ms_ != kNoDeadline) {
        if (now >= c->response_deadline_ms_) {
          c->fail(UpstreamError::kResponseTimeout);
          return;
        }
        uv_timer_start(&c->sock_.timer, on_timer, static_cast<uint64_t>(std::min(c->response_deadline_ms_ - now, c->idle_ms_)), 0);
        return;
      }
      if (c->awaiting_head_) {
        // The request is still going up. A client slow to send is not timed here (that is
        // client.body_timeout); only a backend that stopped taking the bytes we hand it.
        const int64_t stuck = c->out_.pending() ? now - c->write_since_ms_ : 0;
        if (stuck >= c->idle_ms_) {
          c->fail(UpstreamError::kSendTimeout);
          return;
        }
        uv_timer_start(&c->sock_.timer, on_timer, static_cast<uint64_t>(std::max<int64_t>(1, c->idle_ms_ - stuck)), 0);
        return;
      }
      // Body streaming: stalled only if the backend went quiet while we were willing to read.
      const int64_t quiet = now - c->last_read_ms_;
      if (!c->read_paused_ && quiet >= c->idle_ms_) {
        c->fail(UpstreamError::kIdleTimeout);
        return;
      }
      const int64_t next = c->read_paused_ ? c->idle_ms_ : c->idle_ms_ - quiet;
      uv_timer_start(&c->sock_.timer, on_timer, static_cast<uint64_t>(std::max<int64_t>(1, next)), 0);
      return;
    }
    default:
      return;
  }
}

void UpstreamConn::on_read(uv_stream_t* s, ssize_t n) {
  auto* c = static_cast<UpstreamConn*>(s->data);
  if (c->state_ == State::kClosed) return;
  if (c->state_ == State::kIdle) {
    c->close();  // the backend closed it (or sent bytes nobody asked for)
    return;
  }
  if (c->state_ == State::kConnecting) {  // (TLS handshake under way: no plaintext comes yet)
    if (n < 0) c->tls_failed(c->sock_.tls() && !c->sock_.tls()->error().empty() ? c->sock_.tls()->error()
                                                                                 : std::string("the instance closed the connection during the TLS handshake"));
    return;
  }
  if (n < 0) {
    if (c->state_ == State::kActive && n == UV_EOF && c->response_started_ && !c->response_done_ &&
        c->parser_.needs_eof()) {
      // A response delimited by the close of the connection ends here.
      c->parser_.finish();
      c->reusable_ = false;
      if (c->state_ == State::kClosed) return;
      if (c->owner_ && !c->owner_->on_upstream_read_done(c)) {
        if (c->state_ != State::kClosed) c->close();
      }
      return;
    }
    if (c->state_ == State::kActive && c->response_done_) {
      c->reusable_ = false;  // closed after a complete response: fine, just not reusable
      return;
    }
    c->fail(UpstreamError::kReset);
    return;
  }
  c->last_read_ms_ = static_cast<int64_t>(uv_now(s->loop));
  if (c->state_ == State::kTunnel) {
    if (c->owner_) c->owner_->on_upstream_body(c, c->sock_.rbuf.data + c->sock_.rbuf.start, c->sock_.rbuf.pending());
    c->sock_.rbuf.start = c->sock_.rbuf.end;
    if (c->state_ == State::kClosed) return;
    if (c->owner_ && c->owner_->on_upstream_read_done(c) && c->state_ != State::kClosed) c->pause_reading();
    return;
  }
  if (c->response_done_) {
    // Bytes after a complete response, before the owner released us: not reusable.
    c->reusable_ = false;
    c->sock_.rbuf.start = c->sock_.rbuf.end;
    return;
  }
  c->response_started_ = true;
  c->parse();
}

void UpstreamConn::parse() {
  const char* begin = sock_.rbuf.data + sock_.rbuf.start;
  const http::Fed fed = parser_.feed(begin, sock_.rbuf.pending());
  if (state_ == State::kClosed) return;
  if (fed.kind == http::Fed::Kind::kAll) {
    sock_.rbuf.start = sock_.rbuf.end;
  } else if (fed.kind != http::Fed::Kind::kError) {
    sock_.rbuf.start += fed.used;
    if (fed.kind == http::Fed::Kind::kUpgrade) {
      state_ = State::kTunnel;
      uv_timer_stop(&sock_.timer);
      if (sock_.rbuf.pending() > 0 && owner_) {
        owner_->on_upstream_body(this, sock_.rbuf.data + sock_.rbuf.start, sock_.rbuf.pending());
        sock_.rbuf.start = sock_.rbuf.end;
        if (state_ == State::kClosed) return;
      }
    } else if (sock_.rbuf.pending() > 0) {
      reusable_ = false;  // trailing bytes after the response
      sock_.rbuf.start = sock_.rbuf.end;
    }
  } else {
    fail(UpstreamError::kBadResponse);
    return;
  }
  // (A consumed buffer needs no rewinding here: TcpConn compacts it before the next read.)
  if (owner_ && owner_->on_upstream_read_done(this) && state_ != State::kClosed && state_ != State::kIdle) pause_reading();
}

// ---- llhttp callbacks ----

int UpstreamConn::cb_message_begin(llhttp_t* p) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  c->head_.clear();
  return 0;
}

int UpstreamConn::cb_status(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  c->head_.add_reason(at, n);
  return c->head_.bytes() > kMaxResponseHead ? -1 : 0;
}

int UpstreamConn::cb_header_field(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  c->head_.add_field(at, n);
  return c->head_.bytes() > kMaxResponseHead ? -1 : 0;
}

int UpstreamConn::cb_header_value(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  c->head_.add_value(at, n);
  return c->head_.bytes() > kMaxResponseHead ? -1 : 0;
}

int UpstreamConn::cb_headers_complete(llhttp_t* p) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  c->head_.status = p->status_code;
  c->head_.http_major = p->http_major;
  c->head_.http_minor = p->http_minor;
  // Control characters in fields are refused by llhttp itself (strict mode, see meson.build).
  // A response Transfer-Encoding other than plain chunked cannot be re-framed faithfully.
  std::string_view te;
  if (c->head_.find("transfer-encoding", te) && !http::iequals(te, "chunked")) return -1;
  const int status = p->status_code;
  if (status >= 200 || status == 101) c->awaiting_head_ = false;  // from now on the idle limit applies
  c->trailers_at_ = c->head_.count();  // llhttp adds a trailer section's fields after these
  if (c->owner_) c->owner_->on_upstream_head(c, c->head_);
  if (c->state_ == State::kClosed || !c->owner_) return -1;
  if (status == 101) return 2;                  // no body; the rest is the tunnel
  // HEAD, 1xx, 204 and 304 have no body whatever Content-Length says (RFC 9112 §6.3); llhttp
  // only knows that when told.
  if ((c->head_request_ && status >= 200) || status < 200 || status == 204 || status == 304) return 1;
  return 0;
}

int UpstreamConn::cb_body(llhttp_t* p, const char* at, size_t n) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  if (c->owner_) c->owner_->on_upstream_body(c, at, n);
  return c->state_ == State::kClosed ? -1 : 0;
}

int UpstreamConn::cb_message_complete(llhttp_t* p) {
  auto* c = static_cast<UpstreamConn*>(p->data);
  if (p->status_code < 200 && p->status_code != 101) return 0;  // 1xx: the final response follows
  if (p->status_code == 101) return 0;
  c->response_done_ = true;
  c->reusable_ = c->reusable_ && llhttp_should_keep_alive(p);
  if (c->owner_ && c->head_.count() > c->trailers_at_) c->owner_->on_upstream_trailers(c, c->head_, c->trailers_at_);
  if (c->state_ == State::kClosed) return -1;
  if (c->owner_) c->owner_->on_upstream_complete(c);
  if (c->state_ == State::kClosed) return -1;
  return HPE_PAUSED;
}

const llhttp_settings_t* UpstreamConn::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = cb_message_begin;
    x.on_status = cb_status;
    x.on_header_field = cb_header_field;
    x.on_header_value = cb_header_value;
    x.on_headers_complete = cb_headers_complete;
    x.on_body = cb_body;
    x.on_message_complete = cb_message_complete;
    return x;
  }();
  return &s;
}

}  // namespace sy::upstream
