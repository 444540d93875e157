// ProxyStream, its attempts: picking an instance not tried yet (hash_on, half-open breakers),
// connecting or taking a pooled connection, the circuit breaker's limits, each attempt's outcome
// for the breaker and outlier detection, and what follows a failed attempt — another (with
// backoff; retry_state decides whether) or the 502/503/504 answer.
#include <algorithm>
#include <string>

#include "proxy/net/assert.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/server/proxy_stream.h"
#include "proxy/server/retry_state.h"

namespace sy::server {

using upstream::UpstreamConn;
using upstream::UpstreamError;

namespace {

health::Outcome outcome_of(upstream::UpstreamError e) {
  switch (e) {
    case upstream::UpstreamError::kConnectFailed:
    case upstream::UpstreamError::kConnectTimeout:
    case upstream::UpstreamError::kTlsFailed:
      return health::Outcome::kConnectFailure;
    case upstream::UpstreamError::kResponseTimeout:
    case upstream::UpstreamError::kIdleTimeout:
    case upstream::UpstreamError::kSendTimeout:
      return health::Outcome::kTimeout;
    case upstream::UpstreamError::kRefused:
      return health::Outcome::kNeutral;  // an instance going away gracefully (GOAWAY) is not failing
    default:
      return health::Outcome::kReset;
  }
}

bool is_connect_failure(upstream::UpstreamError e) {
  return e == upstream::UpstreamError::kConnectFailed || e == upstream::UpstreamError::kConnectTimeout ||
         e == upstream::UpstreamError::kTlsFailed || e == upstream::UpstreamError::kRefused;
}

// Does `on` (retry.on) name this failure?
bool names(const conf::Conditions& on, upstream::UpstreamError e) {
  switch (e) {
    case upstream::UpstreamError::kConnectFailed:
    case upstream::UpstreamError::kConnectTimeout:
    case upstream::UpstreamError::kTlsFailed:
      return on.connect_failure;
    case upstream::UpstreamError::kResponseTimeout:
    case upstream::UpstreamError::kSendTimeout:
      return on.timeout;
    case upstream::UpstreamError::kRefused:
      return true;  // never processed (RFC 9113 §8.7): safe to send again whatever retry.on says
    default:
      return on.reset;
  }
}

}  // namespace

void ProxyStream::start_attempt() {
  const int64_t now = static_cast<int64_t>(uv_now(w_.loop));
  lb::PickContext ctx;
  ctx.exclude_mask = s_->tried_mask;
  ctx.now_ns = static_cast<int64_t>(uv_hrtime());
  if (s_->upstreams->hash_on.kind != HashOn::Kind::kNone) {
    ctx.has_hash = request_hash(ctx.hash);
  }
  const Endpoint* chosen = nullptr;
  int chosen_idx = -1;
  // An instance whose breaker is half-open takes only its trial requests; try another then. In
  // panic routing every instance is out anyway: breakers are not asked (Envoy's panic mode).
  // When every pick refuses, a half-open one among them takes the request beyond its trial limit:
  // max_ejection_percent caps open breakers, not half-open ones, so all of a service's instances can
  // be half-open with their trials in flight, and refusing everything then is the outage the cap
  // exists to prevent.
  const size_t max_tries = std::min<size_t>(8, s_->upstreams->endpoints.size() + 2);
  int half_open_idx = -1;
  for (size_t tries = 0; tries < max_tries && !chosen; ++tries) {
    ctx.random = w_.next_random();
    int idx = s_->upstreams->pick(ctx);
    if (idx < 0) break;
    const Endpoint& e = *s_->upstreams->endpoints[static_cast<size_t>(idx)];
    if (e.runtime && !s_->upstreams->panic && !e.runtime->breaker.allow(now)) {
      if (half_open_idx < 0 && e.runtime->breaker.state(now) == health::CircuitBreaker::State::kHalfOpen) half_open_idx = idx;
      if (idx < 64) ctx.exclude_mask |= uint64_t{1} << idx;
      continue;
    }
    chosen = &e;
    chosen_idx = idx;
  }
  if (!chosen && half_open_idx >= 0) {
    const Endpoint& e = *s_->upstreams->endpoints[static_cast<size_t>(half_open_idx)];
    if (e.runtime->breaker.allow_beyond_trials()) {
      chosen = &e;
      chosen_idx = half_open_idx;
    }
  }
  if (!chosen) {
    send_error(503, "overloaded", "every instance of '" + s_->upstreams->service + "' is refusing requests (circuit breakers)", c_.close_after_);
    return;
  }
  s_->endpoint = chosen;
  if (chosen_idx < 64) s_->tried_mask |= uint64_t{1} << chosen_idx;
  s_->rt = chosen->runtime.get();
  s_->outcome_reported = false;
  if (s_->rt) {
    ++s_->rt->load.active;  // also switchyard_upstream_active_requests (Runtime::export_gauges)
  }
  connect_upstream(false);
}


bool ProxyStream::request_hash(uint64_t& out) const {
  const HashOn& h = s_->upstreams->hash_on;
  std::string_view key;
  switch (h.kind) {
    case HashOn::Kind::kSourceIp:
      key = c_.client_ip_;
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


void ProxyStream::connect_upstream(bool fresh) {
  ++s_->attempts;
  c_.state_ = ClientSide::State::kConnecting;
  c_.stop_reading();
  // services.X.tls, or an instance registered over TLS: verified against server_name or the Host.
  // protocol: h2 is TLS whatever the scheme said (the codec makes a registration's agree).
  upstream::TlsTarget tls;
  const conf::UpstreamProtocol proto = s_->endpoint->protocol_in(*s_->upstreams->cfg);
  const bool service_tls = s_->upstreams->cfg->tls.enabled;
  const bool instance_tls = s_->endpoint->tls || proto == conf::UpstreamProtocol::kH2;
  if (service_tls || instance_tls) {
    if (s_->table->tls) tls.cfg = s_->table->tls->for_instance(s_->upstreams->service, service_tls, instance_tls);
    if (!tls.cfg) {
      send_error(502, "upstream_failed", "service '" + s_->upstreams->service + "' has no TLS context loaded", c_.close_after_);
      return;
    }
    if (!tls.cfg->server_name.empty()) {
      tls.name = tls.cfg->server_name;
    } else {
      std::string_view host;
      x_->req.find("host", host);
      tls.name = http::normalize_host(host);
      if (!tls.name.empty() && tls.name.front() == '[') tls.name = tls.name.substr(1, tls.name.size() - 2);
      if (tls.name.empty()) tls.name = s_->endpoint->address.host();
    }
  }
  if (proto != conf::UpstreamProtocol::kHttp1) {
    // (An h2c instance of a service whose tls is enabled is reached as h2: TLS is not optional.)
    connect_h2(fresh, tls);
    return;
  }
  if (!fresh) {
    while (UpstreamConn* c = w_.pool.take(s_->endpoint->uid)) {
      if (!c->serves(tls.cfg.get(), tls.name)) {
        c->close();  // made for another name (or before the service's TLS changed)
        continue;
      }
      s_->up = c;
      c->attach(this);
      send_request_head();
      return;
    }
  }
  if (!admit_connection()) return;
  int err = 0;
  s_->up = UpstreamConn::connect(w_.loop, w_.buffers, s_->endpoint->address, s_->endpoint->uid, s_->upstreams->cfg->timeouts.connect,
                              this, s_->srt ? s_->srt->connections : nullptr, &err, tls.cfg ? &tls : nullptr);
  if (s_->up) return;
  connect_refused(err);
}

// A new upstream connection within circuit_breaker.max_connections and max_pending; past a limit
// the answer is an immediate 503: queues never grow without bound. True: go on (pending slot taken).
bool ProxyStream::admit_connection() {
  const auto& cb = s_->upstreams->cfg->circuit_breaker;
  if (!s_->srt) return true;
  if (*s_->srt->connections >= cb.max_connections || s_->srt->pending >= cb.max_pending) {
    report_outcome(health::Outcome::kNeutral);  // not the instance's fault: frees a half-open trial
    send_error(503, "overloaded", "service '" + s_->upstreams->service + "' is at its connection limits", c_.close_after_);
    return false;
  }
  x_->pending_slot.take(s_->srt->pending);
  return true;
}

// HTTP/2 to the instance (protocol h2c, or h2 with `tls`): a stream on a connection of the
// worker's H2Pool that has room and was made for the same TLS context and name, or on a new one.
void ProxyStream::connect_h2(bool fresh, upstream::TlsTarget& tls) {
  if (s_->upgrade) {
    report_outcome(health::Outcome::kNeutral);
    send_error(502, "upstream_failed", "service '" + s_->upstreams->service + "' is reached over HTTP/2, which carries no protocol upgrade",
               true);
    return;
  }
  upstream::H2Upstream* conn = fresh ? nullptr : w_.h2_pool.find(s_->endpoint->uid, tls.cfg.get(), tls.name);
  if (!conn || !conn->ready()) {
    if (!admit_connection()) return;
  }
  if (!conn) {
    int err = 0;
    upstream::H2Windows win;
    win.stream = static_cast<uint32_t>(c_.cfg_->http2.initial_stream_window);
    win.connection = static_cast<uint32_t>(c_.cfg_->http2.connection_window);
    conn = upstream::H2Upstream::connect(w_.loop, w_.buffers, s_->endpoint->address, s_->endpoint->uid, s_->upstreams->cfg->timeouts.connect,
                                         win, s_->srt ? s_->srt->connections : nullptr, &err, tls.cfg ? &tls : nullptr);
    if (!conn) {
      connect_refused(err);
      return;
    }
    w_.h2_pool.add(conn);
  }
  const bool ready = conn->ready();
  s_->up = conn->open(this);
  if (ready) send_request_head();  // (else on_upstream_connected)
}

// The connection could not even be started (libuv's `err`).
void ProxyStream::connect_refused(int err) {
  x_->pending_slot.release();
  net::Resource r;
  if (net::is_exhaustion(err, r)) {
    // The proxy's own shortage: the instance is not blamed, and the client hears why.
    report_outcome(health::Outcome::kNeutral);
    if (w_.observer) w_.observer->on_exhaustion(r, std::string("upstream connect: ") + uv_strerror(err));
    send_error(503, "overloaded", std::string("switchyard is out of ") + (r == net::Resource::kFd ? "file descriptors" : "memory") +
                                      " (" + uv_strerror(err) + "); try again shortly", c_.close_after_);
    return;
  }
  fail_attempt(upstream::UpstreamError::kConnectFailed);
}


void ProxyStream::on_upstream_connected(upstream::Exchange*) {
  x_->pending_slot.release();
  send_request_head();
}


void ProxyStream::report_outcome(health::Outcome o) {
  if (s_->outcome_reported) return;
  s_->outcome_reported = true;
  if (!s_->rt) return;
  SY_ASSERT(s_->endpoint && s_->endpoint->runtime.get() == s_->rt);  // the attempt's endpoint holds its runtime
  w_.report(s_->endpoint->runtime, o);
}


void ProxyStream::report_grpc_outcome(int grpc_status) {
  // Only the statuses an `on` list names count (by default UNAVAILABLE: the instance cannot serve);
  // an application status (NOT_FOUND, INVALID_ARGUMENT...) is the call's answer, a success here.
  const conf::Service& sc = *s_->upstreams->cfg;
  const bool judged = sc.circuit_breaker.on.has_grpc(grpc_status) || sc.outlier_detection.on.has_grpc(grpc_status);
  report_outcome(judged ? health::Outcome(health::Outcome::kGrpcStatus, grpc_status) : health::Outcome(health::Outcome::kSuccess));
}


void ProxyStream::release_attempt() {
  x_->pending_slot.release();
  x_->retry_slot.release();
  if (s_->rt) {
    if (!s_->outcome_reported) report_outcome(health::Outcome::kNeutral);  // never judged: free its trial
    --s_->rt->load.active;
    s_->rt = nullptr;
  }
}


void ProxyStream::release_exchange() {
  if (!x_) return;  // (an idle connection holds no exchange)
  release_attempt();
  x_->request_slot.release();
}


bool ProxyStream::should_retry(bool named, bool connect_failure, bool grpc) const {
  if (!s_->upstreams) return false;
  FailedTry t;
  t.named = named;
  t.grpc_named = grpc && named;
  t.out_of_time = deadline_passed();
  t.connect_failure = connect_failure;
  t.attempts_made = static_cast<uint32_t>(s_->attempts);
  t.head_sent = s_->head_sent;
  t.idempotent = s_->idempotent;
  t.request_done = s_->request_done;
  t.body_replayable = s_->req_framing == http::Framing::kNone || s_->replayable;
  t.shutting_down = w_.shutting_down;
  // (The budget is asked only when it matters: may_retry() ignores it for connect failures.)
  const bool budget = !s_->srt || connect_failure || health::Runtime::retry_allowed(*s_->srt, *s_->upstreams->cfg);
  return may_retry(s_->upstreams->cfg->retry, t, budget);
}


void ProxyStream::schedule_retry() {
  const bool budgeted = s_->head_sent;  // see should_retry(): connect failures are not budgeted
  release_attempt();
  if (s_->srt && budgeted) x_->retry_slot.take(s_->srt->active_retries);
  c_.state_ = ClientSide::State::kConnecting;
  c_.stop_reading();
  s_->response_started = s_->response_done = s_->discarding = s_->discard_done = false;
  x_->to_client.clear();
  s_->backoff = true;
  c_.arm(backoff_ms(s_->upstreams->cfg->retry, static_cast<uint32_t>(s_->attempts), w_.next_random()));
}


void ProxyStream::on_backoff_over() {
  s_->backoff = false;
  start_attempt();
}


void ProxyStream::fail_attempt(UpstreamError e) {
  // A try cut by the call's own grpc-timeout is the client's deadline, not the instance failing,
  // and the call has no time left for another.
  const bool deadline = s_->try_by_deadline && e == UpstreamError::kResponseTimeout;
  report_outcome(deadline ? health::Outcome(health::Outcome::kNeutral) : outcome_of(e));
  if (!deadline && should_retry(names(s_->upstreams->cfg->retry.on, e), is_connect_failure(e))) {
    schedule_retry();
    return;
  }
  const bool timeout = e == UpstreamError::kConnectTimeout || e == UpstreamError::kResponseTimeout ||
                       e == UpstreamError::kSendTimeout;
  std::string msg = std::string("upstream ") + (s_->endpoint ? s_->endpoint->address.text : "") + ": " + upstream::error_name(e);
  if (deadline) msg += " (the call's grpc-timeout of " + std::to_string(s_->grpc_deadline_ms) + " ms ran out)";
  if (e == UpstreamError::kTlsFailed && !s_->tls_error.empty()) msg += " (" + s_->tls_error + ")";
  if (s_->attempts > 1) msg += " (after " + std::to_string(s_->attempts) + " attempts)";
  if (timeout) send_error(504, "upstream_timeout", msg, c_.close_after_);
  else send_error(502, "upstream_failed", msg, c_.close_after_);
}

void ProxyStream::on_upstream_error(upstream::Exchange* c, UpstreamError e) {
  s_->up = nullptr;  // `c` is closed already
  if (e == UpstreamError::kTlsFailed) {
    s_->tls_error = c->tls_error();
    if (w_.observer)
      w_.observer->on_upstream_tls_failure(s_->upstreams ? std::string_view(s_->upstreams->service) : std::string_view(),
                                          s_->endpoint ? std::string_view(s_->endpoint->id) : std::string_view(), c->tls_reason(),
                                          c->tls_error());
  }
  if (c_.state_ == ClientSide::State::kClosed) return;
  if (s_->response_done && c_.state_ != ClientSide::State::kTunnel) {
    // The whole response was handed to the client side, which is still writing it out (an
    // HTTP/2 client's frames leave at the end of the loop turn): the instance's connection
    // ending now (its GOAWAY and close) costs this exchange nothing, and is no failure of it.
    return;
  }
  if (c_.state_ == ClientSide::State::kTunnel || s_->response_started) {
    report_outcome(outcome_of(e));
    // Nothing honest can be said to the client mid-response: truncate by closing.
    if (c_.state_ == ClientSide::State::kTunnel && x_->to_client.pending()) c_.close_after_ = true;
    abort();
    return;
  }
  x_->pending_slot.release();
  // A pooled connection the backend closed under us before any response byte: the request never
  // reached an application, so an idempotent one without a body goes once more on a fresh
  // connection to the same instance (not counted against the instance or the retry budget).
  if (c->reused() && !c->response_started() && e == UpstreamError::kReset && s_->idempotent &&
      s_->req_framing == http::Framing::kNone && !s_->stale_retried) {
    s_->stale_retried = true;
    --s_->attempts;
    connect_upstream(true);
    return;
  }
  fail_attempt(e);
}

}  // namespace sy::server
