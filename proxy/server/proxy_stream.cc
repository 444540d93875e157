// DownstreamConn, the stream half: one exchange from a complete request head to the last byte of
// its response — route, limits, attempts and retries (retry_state decides), the upstream
// connection's callbacks, relaying the response, error answers. Its state is DownstreamConn::Stream
// (`s_`), reset as a whole for the next exchange; the connection half is downstream_conn.cc.
#include <algorithm>
#include <charconv>
#include <cstdio>

#include "proxy/http/chunked.h"
#include "proxy/net/assert.h"
#include "proxy/server/downstream_conn.h"
#include "proxy/server/retry_state.h"

namespace sy::server {

using upstream::UpstreamConn;
using upstream::UpstreamError;

namespace {

int64_t ms(conf::Millis m) { return m.count(); }

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
  if (sock_.rbuf.start == sock_.rbuf.end) sock_.rbuf.start = sock_.rbuf.end = 0;
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
    if (sock_.rbuf.pending() > 0 && up_) {
      up_->out().ref(sock_.rbuf.data + sock_.rbuf.start, sock_.rbuf.pending());
      sock_.rbuf.start = sock_.rbuf.end;
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


}  // namespace sy::server
