// H2Upstream / H2Exchange: an nghttp2 client session on a TcpConn; requests out as HEADERS, DATA
// and trailing HEADERS, responses in as owner events delivered after each read (never inside the
// library's callbacks, so an owner may open, release or reset streams from any of them).
#include "proxy/upstream/h2_upstream.h"

#include <algorithm>
#include <cstring>

#include "proxy/http/ascii.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/assert.h"

namespace sy::upstream {

namespace {

constexpr int64_t kNoDeadline = INT64_MAX;
// A peer that announces more is still held to this many streams per connection: a second
// connection spreads the load over the instance's accept queue and cores.
constexpr uint32_t kMaxStreamsPerConnection = 256;

nghttp2_nv nv(std::string_view n, std::string_view v) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())), reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())),
          n.size(), v.size(), NGHTTP2_NV_FLAG_NONE};
}

// Header fields as HTTP/2 wants them (lower-case names), gathered into one arena first so the
// name/value pairs can point into it once it stops growing.
struct FieldList {
  std::string arena;
  std::vector<std::pair<size_t, size_t>> spans;  // (offset, length): name, value, name, value, ...
  void add(std::string_view n, std::string_view v, bool lower) {
    spans.emplace_back(arena.size(), n.size());
    if (lower) for (char c : n) arena.push_back(http::ascii_lower(c));
    else arena.append(n);
    spans.emplace_back(arena.size(), v.size());
    arena.append(v);
  }
  std::vector<nghttp2_nv> nva() const {
    std::vector<nghttp2_nv> out;
    out.reserve(spans.size() / 2);
    for (size_t i = 0; i + 1 < spans.size(); i += 2)
      out.push_back(nv(std::string_view(arena.data() + spans[i].first, spans[i].second),
                       std::string_view(arena.data() + spans[i + 1].first, spans[i + 1].second)));
    return out;
  }
};

// "name: value\r\n" lines (http::append_trailer_lines) into fields.
void parse_lines(std::string_view lines, FieldList& f) {
  while (!lines.empty()) {
    const size_t eol = lines.find("\r\n");
    std::string_view line = lines.substr(0, eol);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      f.add(line.substr(0, colon), v, true);
    }
    if (eol == std::string_view::npos) break;
    lines.remove_prefix(eol + 2);
  }
}

}  // namespace

// ---------------------------------------------------------------- H2Exchange

void H2Exchange::send_head(const http::MessageHead& req, const http::RequestForward& f) {
  H2Upstream& c = *conn_;
  FieldList fl;
  std::string_view host;
  req.find("host", host);
  fl.add(":method", f.method, false);
  fl.add(":scheme", f.tls || c.tls_ ? "https" : "http", false);
  fl.add(":authority", host.empty() ? std::string_view(c.address_.text) : host, false);
  fl.add(":path", f.target, false);
  struct Ctx {
    FieldList* fl;
  } ctx{&fl};
  http::upstream_request_fields(
      req, f,
      [](void* p, std::string_view n, std::string_view v) {
        // Host became :authority; Connection and Upgrade mean nothing in HTTP/2 (RFC 9113 §8.2.2).
        if (http::iequals(n, "host") || http::iequals(n, "connection") || http::iequals(n, "upgrade")) return;
        static_cast<Ctx*>(p)->fl->add(n, v, true);
      },
      &ctx);
  // TE is hop-by-hop, but "trailers" is the one value HTTP/2 carries, and gRPC servers want it.
  std::string_view te;
  if (req.find("te", te) && http::has_token(te, "trailers")) fl.add("te", "trailers", false);
  std::string len;
  length_framed_ = f.framing == http::Framing::kLength;
  length_left_ = length_framed_ ? f.content_length : 0;
  if (length_framed_) {
    http::append_uint(len, f.content_length);
    fl.add("content-length", len, false);
  }
  const bool body = f.framing != http::Framing::kNone && !(length_framed_ && f.content_length == 0);
  end_queued_ = !body;
  const std::vector<nghttp2_nv> nva = fl.nva();
  nghttp2_data_provider prd{};
  prd.source.ptr = this;
  prd.read_callback = H2Upstream::cb_read_body;
  const int32_t id = nghttp2_submit_request(c.s_, nullptr, nva.data(), nva.size(), body ? &prd : nullptr, this);
  has_output_ = true;
  if (id < 0) {
    // (The session takes no new stream: a GOAWAY came in between.) Reported from the timer, not
    // from inside the owner's call.
    errored_ = true;
    error_ = UpstreamError::kRefused;
    c.deliver_soon(this);
    return;
  }
  id_ = id;
}

void H2Exchange::send_body(const char* p, size_t n, bool) {
  if (n == 0 || end_queued_) return;
  if (length_framed_) n = static_cast<size_t>(std::min<uint64_t>(n, length_left_));
  body_.append(p, n);
  has_output_ = true;
  if (length_framed_) {
    length_left_ -= n;
    if (length_left_ == 0) end_queued_ = true;  // the promised length ends the stream
  }
  resume_body();
}

// Bytes (or the end) queued while a write is still draining are not written by write(): the
// owner waits for on_upstream_drained first. A data source the library deferred must take them
// anyway, or that drain never comes (body_ holds bytes nothing reads): the pending socket write
// or the instance's WINDOW_UPDATE sends them. (A 10 MB gRPC upload stalled this way, holding the
// client's window.)
void H2Exchange::resume_body() {
  if (deferred_ && id_ >= 0 && conn_->s_) {
    deferred_ = false;
    nghttp2_session_resume_data(conn_->s_, id_);
  }
}

void H2Exchange::send_end(std::string_view trailer_lines) {
  if (end_queued_) return;
  end_queued_ = true;
  trailer_lines_.assign(trailer_lines);
  has_output_ = true;
  resume_body();
}

void H2Exchange::write() {
  has_output_ = false;
  if (owner_done_) return;
  waiting_drain_ = true;
  resume_body();
  conn_->send();
}

void H2Exchange::expect_response(bool head_request, conf::Millis idle_timeout) {
  (void)head_request;  // (HTTP/2 frames the body: a HEAD's response simply has none)
  idle_ms_ = idle_timeout.count();
  last_read_ms_ = static_cast<int64_t>(uv_now(conn_->sock_.tcp.loop));
}

void H2Exchange::request_sent(conf::Millis response_timeout) {
  if (head_in_ || response_deadline_ms_ != kNoDeadline) return;
  response_deadline_ms_ = static_cast<int64_t>(uv_now(conn_->sock_.tcp.loop)) + response_timeout.count();
  conn_->rearm();
}

void H2Exchange::resume_reading() {
  if (!paused_) return;
  paused_ = false;
  if (owner_done_) return;
  consume_delivered();
  last_read_ms_ = static_cast<int64_t>(uv_now(conn_->sock_.tcp.loop));  // (a paused stream is not stalled)
  conn_->deliver_soon(this);  // what waited
}

bool H2Exchange::response_length(uint64_t& n) const {
  if (head_ended_) {
    n = 0;  // the HEADERS frame ended the stream (gRPC's trailers-only answer): no body at all
    return true;
  }
  if (!has_length_) return false;
  n = length_;
  return true;
}

void H2Exchange::release(Pool&, conf::Millis idle_timeout) {
  conn_->pool_idle_ms_ = idle_timeout.count();
  if (!end_given_ || !ready_to_end()) {
    close();  // (the stream is not over both ways: reset it)
    return;
  }
  consume_delivered();
  end_for_owner();
}

void H2Exchange::close() {
  if (owner_done_) return;
  const size_t held = delivered_.size() + incoming_.size();
  delivered_.clear();
  incoming_.clear();
  if (conn_->s_ && id_ >= 0) {
    if (held) nghttp2_session_consume_connection(conn_->s_, held);
    if (!stream_closed_) nghttp2_submit_rst_stream(conn_->s_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
  }
  end_for_owner();
  conn_->send();
}

void H2Exchange::consume_delivered() {
  const size_t n = delivered_.size();
  delivered_.clear();
  if (n == 0 || !conn_->s_ || id_ < 0) return;
  nghttp2_session_consume_connection(conn_->s_, n);
  if (!stream_closed_) nghttp2_session_consume_stream(conn_->s_, id_, n);
  conn_->send();
}

void H2Exchange::end_for_owner() {
  owner_done_ = true;
  owner_ = nullptr;
  waiting_drain_ = false;
  if (id_ < 0 && !stream_closed_) {
    stream_closed_ = true;  // it never had a stream
    conn_->stream_ended(this);
  }
}

void H2Exchange::fail(UpstreamError e) {
  if (owner_done_) return;
  UpstreamOwner* o = owner_;
  close();
  o->on_upstream_error(this, e);
}

void H2Exchange::deliver() {
  dirty_ = false;
  if (owner_done_ || paused_) return;
  UpstreamOwner* o = owner_;
  bool gave = false;
  if (head_in_ && !head_given_) {
    head_given_ = true;
    gave = true;
    o->on_upstream_head(this, head_);
    if (owner_done_) return;
  }
  if (head_given_ && !incoming_.empty()) {
    SY_ASSERT(delivered_.empty());  // (not paused: the last hand-over was flushed)
    delivered_.swap(incoming_);
    gave = true;
    o->on_upstream_body(this, delivered_.data(), delivered_.size());
    if (owner_done_) return;
  }
  if (ended_ && head_given_ && !end_given_) {
    end_given_ = true;
    gave = true;
    if (trailers_.count() > 0) {
      o->on_upstream_trailers(this, trailers_, 0);
      if (owner_done_) return;
    }
    o->on_upstream_complete(this);
    if (owner_done_) return;
  } else if (errored_ && !end_given_) {
    if (gave) {
      // What came before the reset goes out first.
      if (!o->on_upstream_read_done(this) && !owner_done_) consume_delivered();
      if (owner_done_) return;
    }
    fail(error_);
    return;
  }
  if (!gave) return;
  const bool pending = o->on_upstream_read_done(this);
  if (owner_done_) return;
  if (pending) paused_ = true;
  else consume_delivered();
}

// ---------------------------------------------------------------- H2Upstream

H2Upstream::H2Upstream(uv_loop_t* loop, net::BufferPool& buffers) {
  sock_.init(loop, this, buffers);
  connect_req_.data = this;
}

H2Upstream::~H2Upstream() {
  while (exchanges_) {
    H2Exchange* x = exchanges_;
    exchanges_ = x->next;
    delete x;
  }
  if (s_) nghttp2_session_del(s_);
}

H2Upstream* H2Upstream::connect(uv_loop_t* loop, net::BufferPool& buffers, const conf::Address& addr, uint64_t uid,
                                conf::Millis connect_timeout, H2Windows windows,
                                std::shared_ptr<std::atomic<uint32_t>> open_count, int* error, TlsTarget* tls) {
  auto* c = new H2Upstream(loop, buffers);
  if (tls) c->tls_ = std::make_unique<TlsTarget>(std::move(*tls));
  if (open_count) {
    ++*open_count;
    c->open_count_ = std::move(open_count);
  }
  c->address_ = addr;
  c->uid_ = uid;
  c->windows_ = windows;
  c->connect_timeout_ms_ = connect_timeout.count();
  const int rc = uv_tcp_connect(&c->connect_req_, &c->sock_.tcp, addr.sa(), on_connect);
  if (rc < 0) {
    if (error) *error = rc;
    c->close();
    return nullptr;
  }
  c->sock_.arm(static_cast<uint64_t>(connect_timeout.count()), on_timer);
  return c;
}

H2Exchange* H2Upstream::open(UpstreamOwner* owner) {
  auto* x = new H2Exchange(this, owner);
  x->reused_ = served_;
  served_ = true;
  x->next = exchanges_;
  if (exchanges_) exchanges_->prev = x;
  exchanges_ = x;
  ++active_;
  return x;
}

bool H2Upstream::has_room() const {
  if (state_ == State::kConnecting) return active_ < kMaxStreamsPerConnection;
  if (state_ != State::kReady || !s_) return false;
  const uint32_t peer = nghttp2_session_get_remote_settings(s_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  return active_ < std::min(peer, kMaxStreamsPerConnection);
}

void H2Upstream::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<H2Upstream*>(req->data);
  if (c->state_ == State::kClosed) return;
  if (status < 0) {
    c->close(UpstreamError::kConnectFailed);
    return;
  }
  uv_tcp_nodelay(&c->sock_.tcp, 1);
  if (c->tls_) {
    // The handshake is part of connecting: the connect timer keeps running.
    static constexpr std::string_view kAlpnH2{"\x02h2", 3};
    std::string why;
    if (!c->tls_->start(c->sock_, on_tls, kAlpnH2, why)) {
      c->tls_failed(why);
      return;
    }
    c->sock_.read_start(on_read);
    return;
  }
  c->sock_.read_start(on_read);
  c->connected();
}

void H2Upstream::on_tls(void* self, bool ok) {
  auto* c = static_cast<H2Upstream*>(self);
  if (c->state_ != State::kConnecting) return;
  const net::TlsSession* t = c->sock_.tls();
  if (!ok) {
    c->tls_failed(t->error());
    return;
  }
  // RFC 7540 §3.3: h2 over TLS is what ALPN selected, nothing else. An instance that answers
  // without ALPN, or with http/1.1, speaks no HTTP/2 on this port.
  if (t->alpn_view() != "h2") {
    const std::string_view got = t->alpn_view();
    c->tls_failed("the instance did not select HTTP/2 by ALPN (" +
                  (got.empty() ? std::string("no ALPN answer") : "it chose " + std::string(got)) +
                  "): use protocol: http1 for it, or enable h2 on it");
    return;
  }
  c->connected();
}

void H2Upstream::tls_failed(const std::string& why) {
  tls_error_ = why;
  const net::TlsSession* t = sock_.tls();
  tls_reason_ = t && t->handshake_done() ? "alpn_mismatch" : t ? t->failure_reason() : "handshake_failed";
  close(UpstreamError::kTlsFailed);
}

void H2Upstream::connected() {
  if (!start_session()) {
    close(UpstreamError::kConnectFailed);
    return;
  }
  state_ = State::kReady;
  sock_.disarm();
  send();  // the preface and our SETTINGS
  // The exchanges that waited for the connection send their heads now.
  std::vector<H2Exchange*> waiting;
  for (H2Exchange* x = exchanges_; x; x = x->next)
    if (!x->owner_done_ && x->id_ < 0 && !x->errored_) waiting.push_back(x);
  for (H2Exchange* x : waiting) {
    if (state_ != State::kReady) break;
    if (!x->owner_done_) x->owner_->on_upstream_connected(x);
  }
  rearm();
}

bool H2Upstream::start_session() {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, cb_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, cb_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cb_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cb_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, cb_stream_close);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // windows open as bytes reach the client
  nghttp2_option_set_no_closed_streams(opt, 1);
#ifdef SY_HAVE_NGHTTP2_MAX_CONTINUATIONS
  nghttp2_option_set_max_continuations(opt, 8);  // CVE-2024-28182, from an instance too
#endif
  const int rc = nghttp2_session_client_new2(&s_, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rc != 0) return false;
  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, windows_.stream},
  };
  if (nghttp2_submit_settings(s_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) return false;
  nghttp2_session_set_local_window_size(s_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(windows_.connection));
  return true;
}

void H2Upstream::on_read(uv_stream_t* st, ssize_t n) {
  auto* c = static_cast<H2Upstream*>(st->data);
  if (c->state_ == State::kClosed) return;
  if (c->state_ == State::kConnecting) {  // (TLS handshake under way: no plaintext comes yet)
    if (n < 0) {
      const net::TlsSession* t = c->sock_.tls();
      c->tls_failed(t && !t->error().empty() ? t->error() : std::string("the instance closed the connection during the TLS handshake"));
    }
    return;
  }
  if (n < 0) {
    c->close(UpstreamError::kReset);
    return;
  }
  net::ReadBuffer& rb = c->sock_.rbuf;
  c->in_recv_ = true;
  const ssize_t rc = nghttp2_session_mem_recv(c->s_, reinterpret_cast<const uint8_t*>(rb.data + rb.start), rb.pending());
  c->in_recv_ = false;
  rb.start = rb.end;  // (DATA was copied out: nothing refers into the buffer)
  c->sock_.release_if_empty();
  if (rc < 0) {
    c->close(UpstreamError::kBadResponse);  // a protocol error by the instance: its streams only
    return;
  }
  c->dispatch();
  if (c->state_ == State::kClosed) return;
  c->send();
}

void H2Upstream::send() {
  if (!s_ || state_ == State::kClosed || state_ == State::kConnecting) return;
  if (in_recv_) {
    send_after_recv_ = true;
    return;
  }
  if (sending_) {
    again_ = true;
    return;
  }
  sending_ = true;
  do {
    again_ = false;
    if (out_.pending()) break;
    for (;;) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(s_, &data);
      if (n < 0) {
        sending_ = false;
        close(UpstreamError::kReset);
        return;
      }
      if (n == 0) break;
      out_.copy(std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)));
    }
    if (!out_.empty()) {
      const int rc = out_.flush(sock_, on_write, this);
      if (rc < 0) {
        sending_ = false;
        close(UpstreamError::kReset);
        return;
      }
      if (rc == net::OutBatch::kPending) break;
    }
    // Exchanges whose bytes all went into frames and out: drained.
    std::vector<H2Exchange*> drained;
    for (H2Exchange* x = exchanges_; x; x = x->next)
      if (x->waiting_drain_ && x->body_off_ == x->body_.size() && !x->owner_done_) drained.push_back(x);
    for (H2Exchange* x : drained) {
      if (!x->waiting_drain_ || x->owner_done_) continue;
      x->waiting_drain_ = false;
      x->owner_->on_upstream_drained(x);
      if (state_ == State::kClosed) {
        sending_ = false;
        return;
      }
    }
  } while (again_);
  sending_ = false;
  if (send_after_recv_) {
    send_after_recv_ = false;
    send();
  }
  if (state_ == State::kDraining && active_ == 0) close();
  else if (!nghttp2_session_want_read(s_) && !nghttp2_session_want_write(s_) && !out_.pending()) close();
}

void H2Upstream::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<H2Upstream*>(req->data);
  c->out_.done();
  if (c->state_ == State::kClosed) return;
  if (status < 0) {
    c->close(UpstreamError::kReset);
    return;
  }
  c->send();
  if (c->state_ != State::kClosed) c->reap();
}

void H2Upstream::mark(H2Exchange* x) {
  if (x->dirty_) return;
  x->dirty_ = true;
  dirty_.push_back(x);
}

void H2Upstream::deliver_soon(H2Exchange* x) {
  mark(x);
  uv_timer_start(&sock_.timer, on_timer, 0, 0);
}

void H2Upstream::dispatch() {
  while (!dirty_.empty()) {
    std::vector<H2Exchange*> now;
    now.swap(dirty_);
    for (H2Exchange* x : now) {
      x->deliver();
      if (state_ == State::kClosed) return;
    }
  }
  reap();
  rearm();
}

void H2Upstream::stream_ended(H2Exchange*) {
  SY_ASSERT(active_ > 0);
  --active_;
  if (active_ == 0) idle_since_ms_ = static_cast<int64_t>(uv_now(sock_.tcp.loop));
}

void H2Upstream::reap() {
  for (H2Exchange* x = exchanges_; x;) {
    H2Exchange* n = x->next;
    if (x->owner_done_ && x->stream_closed_ && !x->dirty_) {
      if (x->prev) x->prev->next = x->next;
      else exchanges_ = x->next;
      if (x->next) x->next->prev = x->prev;
      if (s_ && x->id_ >= 0) nghttp2_session_set_stream_user_data(s_, x->id_, nullptr);
      delete x;
    }
    x = n;
  }
}

void H2Upstream::rearm() {
  if (state_ != State::kReady && state_ != State::kDraining) return;
  const int64_t now = static_cast<int64_t>(uv_now(sock_.tcp.loop));
  int64_t at = kNoDeadline;
  for (H2Exchange* x = exchanges_; x; x = x->next) {
    if (x->owner_done_) continue;
    if (!x->head_in_) at = std::min(at, x->response_deadline_ms_);
    else if (!x->ended_ && !x->paused_) at = std::min(at, x->last_read_ms_ + x->idle_ms_);
  }
  if (active_ == 0) at = std::min(at, idle_since_ms_ + pool_idle_ms_);
  // Exchanges marked for delivery (resume_reading(), a refused submit) wait for this same timer,
  // started at 0 ms. Re-arming it for a later deadline must not push their delivery back to it:
  // their DATA holds the instance's window, so nothing else would come to deliver it (a 10 MB
  // echo stalled until the call's deadline this way, about 1 run in 20 under load).
  if (!dirty_.empty()) at = now;
  if (at == kNoDeadline) {
    sock_.disarm();
    return;
  }
  sock_.arm(static_cast<uint64_t>(std::max<int64_t>(at - now, 1)), on_timer);
}

void H2Upstream::on_timer(uv_timer_t* t) {
  auto* c = static_cast<H2Upstream*>(t->data);
  if (c->state_ == State::kClosed) return;
  if (c->state_ == State::kConnecting) {
    c->close(UpstreamError::kConnectTimeout);
    return;
  }
  const int64_t now = static_cast<int64_t>(uv_now(t->loop));
  std::vector<std::pair<H2Exchange*, UpstreamError>> late;
  for (H2Exchange* x = c->exchanges_; x; x = x->next) {
    if (x->owner_done_ || x->dirty_) continue;
    if (!x->head_in_ && now >= x->response_deadline_ms_) late.emplace_back(x, UpstreamError::kResponseTimeout);
    else if (x->head_in_ && !x->ended_ && !x->paused_ && now - x->last_read_ms_ >= x->idle_ms_)
      late.emplace_back(x, UpstreamError::kIdleTimeout);
  }
  for (auto& [x, e] : late) {
    x->fail(e);
    if (c->state_ == State::kClosed) return;
  }
  c->dispatch();  // (also what resume_reading() and a refused submit left)
  if (c->state_ == State::kClosed) return;
  if (c->active_ == 0 && now - c->idle_since_ms_ >= c->pool_idle_ms_) {
    c->close();
    return;
  }
  c->send();
}

void H2Upstream::retire() {
  if (state_ == State::kClosed) return;
  if (active_ == 0 || state_ == State::kConnecting) {
    close();
    return;
  }
  state_ = State::kDraining;
  nghttp2_submit_goaway(s_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s_), NGHTTP2_NO_ERROR, nullptr, 0);
  send();
}

void H2Upstream::close(UpstreamError e) {
  if (state_ == State::kClosed) return;
  if (pool_) pool_->remove(this);
  state_ = State::kClosed;
  if (open_count_) {
    --*open_count_;
    open_count_.reset();
  }
  sock_.disarm();
  sock_.close(on_gone);
  // Every exchange still owned hears why, once (an owner may open a new one elsewhere meanwhile).
  std::vector<H2Exchange*> owned;
  for (H2Exchange* x = exchanges_; x; x = x->next)
    if (!x->owner_done_) owned.push_back(x);
  for (H2Exchange* x : owned) {
    if (x->owner_done_) continue;
    UpstreamOwner* o = x->owner_;
    x->stream_closed_ = true;
    x->owner_done_ = true;
    x->owner_ = nullptr;
    if (e == UpstreamError::kTlsFailed) {
      x->tls_error_ = tls_error_;
      x->tls_reason_ = tls_reason_;
    }
    o->on_upstream_error(x, x->id_ < 0 && e == UpstreamError::kReset ? UpstreamError::kConnectFailed : e);
  }
}

void H2Upstream::on_gone(void* self) { delete static_cast<H2Upstream*>(self); }

// ---- the library's callbacks (inside mem_recv / mem_send: no owner is called from here) ----

int H2Upstream::cb_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  auto* x = static_cast<H2Exchange*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (!x) return 0;
  if (x->head_in_) {
    x->in_trailers_ = true;
    x->trailers_.clear();
  } else {
    x->head_.clear();
    x->head_.http_major = 2;  // (Via says which version this hop spoke)
    x->head_.http_minor = 0;
    x->has_length_ = false;
  }
  return 0;
}

int H2Upstream::cb_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
                          const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  auto* x = static_cast<H2Exchange*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (!x) return 0;
  const std::string_view n(reinterpret_cast<const char*>(name), namelen);
  const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  http::MessageHead& h = x->in_trailers_ ? x->trailers_ : x->head_;
  if (!n.empty() && n[0] == ':') {
    if (n == ":status" && !x->in_trailers_) {
      int st = 0;
      for (char ch : v) st = st * 10 + (ch - '0');
      h.status = st;
    }
    return 0;
  }
  if (n == "content-length" && !x->in_trailers_) {
    uint64_t len = 0;
    for (char ch : v) len = len * 10 + static_cast<uint64_t>(ch - '0');  // (the library checked it)
    x->length_ = len;
    x->has_length_ = true;
  }
  h.add_field(n.data(), n.size());
  h.add_value(v.data(), v.size());
  return 0;
}

int H2Upstream::cb_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* self) {
  auto* c = static_cast<H2Upstream*>(self);
  if (f->hd.type == NGHTTP2_GOAWAY) {
    // No new stream here; the ones above its last stream id are closed as refused by the library.
    if (c->state_ == State::kReady) c->state_ = State::kDraining;
    if (c->pool_) c->pool_->remove(c);
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  auto* x = static_cast<H2Exchange*>(nghttp2_session_get_stream_user_data(s, f->hd.stream_id));
  if (!x) return 0;
  if (f->hd.type == NGHTTP2_HEADERS) {
    if (!x->in_trailers_ && !x->head_in_) {
      if (x->head_.status < 200) {
        // An interim response (100, 103): not relayed from an HTTP/2 instance; the final head
        // comes next on the same stream.
        x->head_.clear();
        return 0;
      }
      x->head_in_ = true;
      x->head_ended_ = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
      x->last_read_ms_ = static_cast<int64_t>(uv_now(c->sock_.tcp.loop));
    }
    x->in_trailers_ = false;
  }
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) x->ended_ = true;
  c->mark(x);
  return 0;
}

int H2Upstream::cb_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data, size_t len, void* self) {
  auto* c = static_cast<H2Upstream*>(self);
  auto* x = static_cast<H2Exchange*>(nghttp2_session_get_stream_user_data(s, id));
  if (!x || x->owner_done_) {
    nghttp2_session_consume(s, id, len);  // nobody reads it: the window goes back at once
    return 0;
  }
  x->incoming_.append(reinterpret_cast<const char*>(data), len);
  x->last_read_ms_ = static_cast<int64_t>(uv_now(c->sock_.tcp.loop));
  c->mark(x);
  return 0;
}

int H2Upstream::cb_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void* self) {
  auto* c = static_cast<H2Upstream*>(self);
  auto* x = static_cast<H2Exchange*>(nghttp2_session_get_stream_user_data(s, id));
  if (!x || x->stream_closed_) return 0;
  x->stream_closed_ = true;
  c->stream_ended(x);
  if (!x->ended_ && !x->owner_done_) {
    x->errored_ = true;
    x->error_ = code == NGHTTP2_REFUSED_STREAM ? UpstreamError::kRefused : UpstreamError::kReset;
    c->mark(x);
  }
  return 0;
}

ssize_t H2Upstream::cb_read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                                 nghttp2_data_source* src, void*) {
  auto* x = static_cast<H2Exchange*>(src->ptr);
  const size_t avail = x->body_.size() - x->body_off_;
  if (avail == 0 && !x->end_queued_) {
    x->deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  const size_t n = std::min(avail, length);
  if (n) std::memcpy(buf, x->body_.data() + x->body_off_, n);
  x->body_off_ += n;
  if (x->body_off_ == x->body_.size()) {
    x->body_.clear();
    x->body_off_ = 0;
  }
  if (x->ready_to_end()) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!x->trailer_lines_.empty()) {
      FieldList fl;
      parse_lines(x->trailer_lines_, fl);
      const std::vector<nghttp2_nv> nva = fl.nva();
      if (!nva.empty() && nghttp2_submit_trailer(s, id, nva.data(), nva.size()) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
  }
  return static_cast<ssize_t>(n);
}

// ---------------------------------------------------------------- H2Pool

H2Upstream* H2Pool::find(uint64_t uid, const net::TlsClientConfig* tls, std::string_view name) const {
  auto it = conns_.find(uid);
  if (it == conns_.end()) return nullptr;
  for (H2Upstream* c = it->second; c; c = c->next)
    if (c->has_room() && c->serves(tls, name)) return c;
  return nullptr;
}

void H2Pool::add(H2Upstream* c) {
  H2Upstream*& head = conns_[c->uid_];
  c->prev = nullptr;
  c->next = head;
  if (head) head->prev = c;
  head = c;
  c->pool_ = this;
  ++count_;
}

void H2Pool::remove(H2Upstream* c) {
  if (c->pool_ != this) return;
  if (c->prev) {
    c->prev->next = c->next;
  } else {
    auto it = conns_.find(c->uid_);
    if (c->next) it->second = c->next;
    else conns_.erase(it);
  }
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  c->pool_ = nullptr;
  --count_;
}

void H2Pool::close_all() {
  while (!conns_.empty()) conns_.begin()->second->close();
}

}  // namespace sy::upstream
