// ProxyStream, the exchange: storage and reset, route and limits, the request head and body going
// up, the response coming down (1xx, framing, tunnels), error answers, the access-log record. The
// request's parser callbacks are in stream_request.cc, attempts and retries in stream_attempts.cc;
// the connection around it is downstream_conn.cc.
#include "proxy/server/proxy_stream.h"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "proxy/http/chunked.h"
#include "proxy/http/grpc.h"
#include "proxy/net/assert.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/server/retry_state.h"

namespace sy::server {

using upstream::UpstreamConn;
using upstream::UpstreamError;

namespace {

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

// ---- storage and lifetime ----

ProxyStream::~ProxyStream() {
  SY_ASSERT(!s_ || !s_->up);  // the connection closed it (DownstreamConn::close)
  give_storage();
}

void ProxyStream::take_storage() {
  if (x_) return;
  x_ = w_.exchanges.acquire();
  s_ = &x_->s;
}

void ProxyStream::give_storage() {
  if (!x_) return;
  SY_ASSERT(!s_->up);  // an attempt in progress keeps its storage
  s_ = nullptr;
  x_->req.clear();
  x_->to_client.clear();
  x_->replay.clear();
  x_->rate_headers.clear();
  w_.exchanges.release(std::move(x_));
}

void ProxyStream::reset() {
  // finish() gave everything back; what is left is plain state.
  SY_ASSERT(!s_->up && !s_->rt && !x_->request_slot.held() && !x_->pending_slot.held() && !x_->retry_slot.held());
  x_->req.clear();
  x_->replay.clear();
  x_->rate_headers.clear();
  if (x_->replay.capacity() > 4096) x_->replay.shrink_to_fit();  // idle connections keep no 64 KiB buffer
  *s_ = {};
}

// ---- the exchange ----

void ProxyStream::begin() {
  s_->head_done = true;
  // The header timer is left to run out: on_timer ignores it in the exchange's states, and not
  // stopping it saves a timer-heap operation per request.
  s_->table = w_.snapshot();
  c_.cfg_ = s_->table->config;
  s_->is_head = x_->req.method == HTTP_HEAD;
  s_->idempotent = method_idempotent(x_->req.method);
  s_->grpc = http::is_grpc(x_->req);
  if (s_->grpc) {
    std::string_view timeout;
    int64_t ms = 0;
    if (x_->req.find("grpc-timeout", timeout) && http::parse_grpc_timeout(timeout, ms)) s_->grpc_deadline_ms = ms;
  }
  if (!c_.keep_alive() || w_.shutting_down) c_.close_after_ = true;
  s_->keep_alive_10 = x_->req.http_minor == 0 && !c_.close_after_;

  if (s_->looped) {
    send_error(508, "loop_detected", "this request came back through this proxy (its Via carries our marker)", c_.close_after_);
    return;
  }
  std::string_view host_header;
  x_->req.find("host", host_header);
  std::string& host = x_->host;  // pooled with the exchange: no allocation once it has grown
  http::normalize_host(host_header, host);
  std::string_view url = x_->req.url();
  const RouteEntry* route = nullptr;
  if (!s_->table->route(host, url, route, s_->upstreams)) {
    send_error(404, "no_route", "no route or service matches host '" + host + "'", c_.close_after_);
    return;
  }
  if (!admit_rate_limits(route)) return;
  if (!s_->upstreams || s_->upstreams->endpoints.empty()) {
    const std::string svc = route ? route->service : host;
    send_error(503, "no_healthy_upstream", "service '" + svc + "' has no healthy instance", c_.close_after_);
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
  s_->srt = s_->upstreams->runtime.get();
  if (s_->srt) {
    if (s_->srt->active_requests >= s_->upstreams->cfg->circuit_breaker.max_requests) {
      send_error(503, "overloaded", "service '" + s_->upstreams->service + "' is at circuit_breaker.max_requests", c_.close_after_);
      return;
    }
    x_->request_slot.take(s_->srt->active_requests);
  }
  // Only idempotent requests are replayed after bytes reached a backend, and only when the whole
  // body fits in the replay buffer (RFC 9110 §9.2.2). gRPC calls are POSTs: naming a gRPC status in
  // retry.on is the operator saying its calls may go again (Envoy's retry_grpc_on, gRPC's own
  // retryableStatusCodes), so their bodies are kept too.
  const bool grpc_retries = s_->grpc && s_->upstreams->cfg->retry.on.grpc.any();
  s_->replayable = (s_->idempotent || grpc_retries) && s_->upstreams->cfg->retry.attempts > 1 &&
                (s_->req_framing != http::Framing::kLength || s_->req_content_length <= kReplayLimit);
  start_attempt();
}

void ProxyStream::send_request_head() {
  c_.state_ = ClientSide::State::kForwarding;
  http::RequestForward f;
  f.method = llhttp_method_name(static_cast<llhttp_method_t>(x_->req.method));
  f.target = x_->target;
  f.client_ip = c_.client_ip_;
  f.tls = c_.tls() != nullptr;
  f.client_cert = c_.client_cert_;
  f.request_id = x_->request_id;
  f.framing = s_->req_framing;
  f.content_length = s_->req_content_length;
  f.upgrade = s_->upgrade;
  // A replay (a retry after the body was consumed) sends the kept body with its length.
  const bool replay = s_->head_sent && s_->req_framing != http::Framing::kNone;
  if (replay) {
    f.framing = http::Framing::kLength;
    f.content_length = x_->replay.size();
  }
  s_->up->send_head(x_->req, f);
  if (replay) s_->up->send_body(x_->replay.data(), x_->replay.size(), true);
  s_->head_sent = true;
  s_->attempt_started_ns = static_cast<int64_t>(uv_hrtime());
  // The response timer starts when the request's last byte is written (on_upstream_drained);
  // until then the client's pace is timed on this side, by client.body_timeout.
  s_->up->expect_response(s_->is_head, s_->upstreams->cfg->timeouts.idle);
  if (!s_->request_done) {
    c_.body_quiet_since_ms_ = static_cast<int64_t>(uv_now(w_.loop));
    c_.arm(c_.cfg_->client.body_timeout);
  }
  if (c_.state_ != ClientSide::State::kForwarding) return;
  // Body bytes already read follow the head in the same write.
  c_.process_input();
  if (c_.state_ == ClientSide::State::kForwarding && s_->up) {
    flush_upstream();
    if (!s_->request_done && s_->up && !s_->up->write_pending()) c_.start_reading();
  }
}

void ProxyStream::flush_upstream() {
  if (!s_->up || s_->up->write_pending()) return;
  if (!s_->up->has_output()) {
    // The request ended with nothing left to write (an HTTP/2 client's END_STREAM arriving on its
    // own, after the body went up and drained): no drain event will come, so the response timer
    // starts here, or it would never start.
    if (s_->request_done && s_->up_drained && c_.state_ == ClientSide::State::kForwarding) s_->up->request_sent(try_timeout());
    return;
  }
  s_->up_drained = false;
  s_->up->write();  // may report drained (or an error) before returning
  if (s_->up && s_->up->write_pending()) c_.stop_reading();  // backpressure: the backend is slower than the client
}

// timeouts.response for one try, or retry.per_try_timeout when that is set and shorter, or what is
// left of the call's grpc-timeout (counted from the request's first byte, as the client counts it).
conf::Millis ProxyStream::try_timeout() {
  const auto& t = s_->upstreams->cfg->timeouts;
  const auto& r = s_->upstreams->cfg->retry;
  conf::Millis limit = r.per_try_timeout.count() > 0 ? std::min(t.response, r.per_try_timeout) : t.response;
  s_->try_by_deadline = false;
  if (s_->grpc_deadline_ms >= 0) {
    const int64_t left = std::max<int64_t>(1, s_->grpc_deadline_ms - elapsed_ms());
    if (left < limit.count()) {
      limit = conf::Millis(left);
      s_->try_by_deadline = true;
    }
  }
  return limit;
}

bool ProxyStream::deadline_passed() const {
  if (s_->grpc_deadline_ms < 0) return false;
  return elapsed_ms() >= s_->grpc_deadline_ms;
}

int64_t ProxyStream::elapsed_ms() const {
  return static_cast<int64_t>((uv_hrtime() - s_->started_ns) / 1'000'000);
}

void ProxyStream::on_upstream_drained(upstream::Exchange*) {
  s_->up_drained = true;
  if (c_.state_ == ClientSide::State::kClosed) return;
  if (c_.state_ == ClientSide::State::kForwarding && s_->request_done && s_->up) s_->up->request_sent(try_timeout());
  if (c_.state_ == ClientSide::State::kTunnel) {
    c_.start_reading();
    return;
  }
  if (c_.state_ == ClientSide::State::kForwarding && !s_->request_done) c_.start_reading();
}

void ProxyStream::on_upstream_head(upstream::Exchange* c, const http::MessageHead& head) {
  const int st = head.status;
  http::ResponseForward f;
  if (st < 200 && st != 101) {
    // Interim responses (100 Continue, 103 Early Hints) go to the client as they come.
    c_.out_interim(head, f);
    return;
  }
  if (w_.observer && s_->endpoint) w_.observer->on_upstream_response(s_->rt, s_->upstreams->service, s_->endpoint->id, st);
  if (s_->rt) {
    const int64_t now_ns = static_cast<int64_t>(uv_hrtime());
    s_->rt->load.observe(now_ns, static_cast<double>(now_ns - s_->attempt_started_ns));
  }
  // A status counts against the instance only when circuit_breaker.on or outlier_detection.on
  // names it (by default 502/503/504: an application's 500 on one path is not the instance failing).
  const conf::Service& sc = *s_->upstreams->cfg;
  const int grpc_status = s_->grpc && st == 200 ? http::grpc_status_in(head) : -1;
  if (grpc_status >= 0) {
    // Trailers-only (the call's status in the head): judged and retried by its gRPC status.
    s_->grpc_status = grpc_status;
    report_grpc_outcome(grpc_status);
    if (should_retry(sc.retry.on.has_grpc(grpc_status), false, true)) {
      s_->discarding = true;
      return;
    }
  } else if (s_->grpc && st == 200) {
    // The status comes in the trailers: the outcome waits for them (on_upstream_trailers).
  } else {
    const bool judged = sc.circuit_breaker.on.has_status(st) || sc.outlier_detection.on.has_status(st);
    report_outcome(judged ? health::Outcome(health::Outcome::kStatus, st) : health::Outcome(health::Outcome::kSuccess));
    if (st >= 200 && should_retry(sc.retry.on.has_status(st), false)) {
      s_->discarding = true;  // read it to the end, throw it away, try elsewhere
      return;
    }
  }
  s_->response_started = true;
  s_->status = st;
  if (st == 101) {
    if (!s_->upgrade) {
      abort();  // a 101 nobody asked for
      return;
    }
    f.upgrade = true;
    c_.out_head(head, f);
    c_.state_ = ClientSide::State::kTunnel;
    c->start_tunnel();
    return;
  }
  if (s_->upgrade || !s_->request_done) c_.close_after_ = true;  // the rest of the request is not ours to read
  const bool client11 = x_->req.http_minor >= 1 || x_->req.http_major == 2;  // (HTTP/2 frames bodies itself)
  uint64_t length = 0;
  if (s_->is_head || st == 204 || st == 304) {
    s_->resp_framing = http::Framing::kNone;
  } else if (c->response_length(length)) {
    s_->resp_framing = http::Framing::kLength;
  } else {
    s_->resp_framing = client11 ? http::Framing::kChunked : http::Framing::kUntilClose;
  }
  if (s_->resp_framing == http::Framing::kUntilClose || w_.shutting_down) c_.close_after_ = true;
  f.framing = s_->resp_framing;
  f.content_length = length;
  f.close = c_.close_after_;
  f.keep_alive_10 = s_->keep_alive_10 && !c_.close_after_;
  f.head_or_304 = s_->is_head || st == 304;
  f.extra = x_->rate_headers;
  c_.out_head(head, f);
}

void ProxyStream::on_upstream_body(upstream::Exchange*, const char* p, size_t n) {
  if (s_->discarding) return;
  s_->bytes_out += n;
  c_.out_body(p, n);
}

void ProxyStream::on_upstream_trailers(upstream::Exchange*, const http::MessageHead& head, size_t first) {
  if (s_->discarding) return;
  if (s_->grpc && !s_->outcome_reported) {
    const int grpc_status = http::grpc_status_in(head, first);
    if (grpc_status >= 0) {
      s_->grpc_status = grpc_status;
      report_grpc_outcome(grpc_status);
    }
  }
  c_.out_trailers(head, first);
}

void ProxyStream::on_upstream_complete(upstream::Exchange*) {
  if (s_->discarding) {
    s_->discard_done = true;
    return;
  }
  report_outcome(health::Outcome::kSuccess);  // (a gRPC response without a status; else a no-op)
  s_->response_done = true;
  c_.out_end();
}

bool ProxyStream::on_upstream_read_done(upstream::Exchange*) {
  if (c_.state_ == ClientSide::State::kClosed) return false;
  if (s_->discarding) {
    if (s_->discard_done) {
      hand_back_upstream(s_->up_drained);
      schedule_retry();
    }
    return false;
  }
  // The upstream's part is over: give the limit slots back before the client can see the last
  // byte, so its next request (on whichever worker) finds them free.
  if (s_->response_done && s_->request_done && c_.state_ == ClientSide::State::kForwarding) release_exchange();
  int rc = c_.flush_client();
  if (rc == net::OutBatch::kPending) return true;
  if (rc < 0) {
    abort();
    return false;
  }
  if (c_.state_ == ClientSide::State::kTunnel) {
    // The 101 is out: bytes the client sent after its upgrade request go up now.
    if (c_.h1_input()->pending() > 0 && s_->up) {
      relay_tunnel_input();
    } else if (s_->up_drained) {
      c_.start_reading();
    }
    return false;
  }
  if (s_->response_done) c_.finish_exchange();
  return false;
}

void ProxyStream::relay_tunnel_input() {
  if (!s_->up) return;
  net::ReadBuffer& rb = *c_.h1_input();
  s_->up->send_raw(rb.data + rb.start, rb.pending());
  rb.start = rb.end;
  flush_upstream();
}

void ProxyStream::drop_upstream() {
  if (!s_ || !s_->up) return;  // (an idle connection holds no exchange)
  s_->up->close();
  s_->up = nullptr;
}

// To the pool when the connection may carry another request, closed otherwise.
void ProxyStream::hand_back_upstream(bool reusable) {
  if (!s_->up) return;
  if (reusable) s_->up->release(w_.pool, s_->upstreams->cfg->timeouts.idle);
  else s_->up->close();
  s_->up = nullptr;
}

void ProxyStream::finish() {
  record(s_->error_code);
  release_exchange();
  hand_back_upstream(s_->request_done && s_->up_drained);
}

bool ProxyStream::answered() const {
  return s_->response_started || c_.out_begun();
}

void ProxyStream::send_error(int status, const char* code, const std::string& message, bool close_conn) {
  drop_upstream();
  s_->status = status;
  s_->error_code = code;
  s_->response_started = true;
  s_->response_done = true;
  if (!s_->request_done || close_conn) c_.close_after_ = true;
  if (c_.close_after_) c_.stop_reading();
  const int grpc = http::is_grpc(x_->req) ? http::grpc_status_for(status, code) : -1;
  s_->grpc_status = grpc;
  if (!c_.out_error(status, code, message, x_->rate_headers, grpc)) {
    c_.close_after_ = true;  // an interim response is still going out; the error follows it
    return;
  }
  int rc = c_.flush_client();
  if (rc == net::OutBatch::kPending) return;
  if (rc < 0) {
    c_.close();
    return;
  }
  c_.finish_exchange();
}

void ProxyStream::abort() {
  record("aborted");
  c_.close();
}

void ProxyStream::record(const char* error) {
  if (!w_.observer || !s_->head_done || !x_) return;
  ExchangeObserver::Record r;
  r.client = c_.client_ip_;
  r.method = llhttp_method_name(static_cast<llhttp_method_t>(x_->req.method));
  r.path = x_->req.url();
  x_->req.find("host", r.host);
  r.status = s_->status;
  r.bytes_in = s_->body_in;
  r.bytes_out = s_->bytes_out;
  r.seconds = static_cast<double>(uv_hrtime() - s_->started_ns) / 1e9;
  r.service = s_->upstreams ? std::string_view(s_->upstreams->service) : std::string_view();
  r.instance = s_->endpoint ? std::string_view(s_->endpoint->id) : std::string_view();
  r.attempts = s_->attempts;
  r.request_id = x_->request_id;
  r.error = error ? error : "";
  r.rate_limited = s_->rate_limited;
  r.protocol = c_.protocol();
  r.grpc = s_->grpc || s_->grpc_status >= 0;
  r.grpc_status = s_->grpc_status;
  r.http2 = r.protocol == "HTTP/2.0";
  if (const net::TlsSession* t = c_.tls()) {
    r.tls_version = t->version();
    r.tls_sni = t->sni_view();
    r.alpn = t->alpn_view();
  }
  r.service_stats = s_->upstreams && s_->upstreams->runtime ? s_->upstreams->runtime->stats : nullptr;
  w_.observer->on_exchange(r);
  s_->head_done = false;  // once per exchange
}

}  // namespace sy::server
