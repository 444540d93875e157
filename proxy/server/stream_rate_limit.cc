// The exchange's rate-limit step (README.md, "Rate limits"): after routing, before any instance
// is chosen. The route's policy and the service's (both, when both name one) each take a token
// for the request's key; a refusal in enforce mode is answered 429 here and reaches no instance,
// no breaker and no limit slot. Every answer of a limited route carries RateLimit-Policy and
// RateLimit (draft-ietf-httpapi-ratelimit-headers), built into the exchange's storage once.


#include <cstring>

#include "proxy/http/rewrite.h"
#include "proxy/ratelimit/key.h"
#include "proxy/net/tcp_conn.h"
#include "proxy/server/proxy_stream.h"

namespace sy::server {

namespace {

// Digits of `v` written backwards from `end`; returns where they start.
char* digits(char* end, uint64_t v) {
  do {
    *--end = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  return end;
}


uint64_t whole_seconds(uint64_t us) { return (us + 999999) / 1000000; }

}  // namespace

bool ProxyStream::admit_rate_limits(const RouteEntry* route) {
  const auto& lims = s_->table->rate_limits;
  if (!lims || lims->by_name.empty()) return true;
  const conf::Service* svc = s_->upstreams ? s_->upstreams->cfg.get() : nullptr;
  // The route's limiter was found when the table was published; the service's by name (its
  // Upstreams outlive a reload that changes the policies).
  ratelimit::Limiter* ls[2] = {nullptr, nullptr};
  if (route && !route->rate_limit.empty()) ls[0] = route->limiter ? route->limiter : lims->find(route->rate_limit);
  if (svc && !svc->rate_limit.name.empty()) ls[1] = lims->find(svc->rate_limit.name);
  if (ls[1] == ls[0]) ls[1] = nullptr;  // one policy named twice is one token
  if (!ls[0] && !ls[1]) return true;
  ratelimit::KeyInputs in;
  in.peer = c_.client_ip_;
  in.route = route ? std::string_view(route->rate_key) : std::string_view();
  in.service = s_->upstreams ? std::string_view(s_->upstreams->service) : std::string_view();
  in.trusted = &c_.cfg_->client.trusted_proxies;
  // The request's arrival (its first byte) is its time: no clock read of its own.
  const int64_t now_us = static_cast<int64_t>(s_->started_ns / 1000);
  struct Taken {
    const ratelimit::Limiter* limiter;
    ratelimit::Verdict v;
  };
  Taken taken[2];
  size_t n = 0;
  const ratelimit::Limiter* refused_by = nullptr;
  uint64_t retry_us = 0;
  for (ratelimit::Limiter* l : ls) {
    std::string_view key;
    if (!l || !ratelimit::key_of(l->policy(), x_->req, in, key)) continue;
    taken[n] = {l, l->take(key, now_us)};
    const ratelimit::Verdict& v = taken[n++].v;
    if (v.pass) continue;
    s_->rate_limited = l->policy().name;
    if (!l->dry_run() && (!refused_by || v.retry_after_us > retry_us)) {
      refused_by = l;
      retry_us = v.retry_after_us;
    }
  }
  if (n == 0) return true;
  // Written straight into the exchange's pooled storage: no allocation once it has grown. The
  // constant parts are the limiters' (made once per policy); only the numbers are formatted here.
  std::string& h = x_->rate_headers;
  if (n == 1) {
    h.append(taken[0].limiter->sole_headers());
  } else {
    h.append("RateLimit-Policy: ");
    for (size_t i = 0; i < n; ++i) h.append(i ? ", " : "").append(taken[i].limiter->policy_field());
    h.append("\r\nRateLimit: ");
  }
  for (size_t i = 0; i < n; ++i) {
    // "name";r=<tokens left>;t=<seconds until full>: the numbers formatted in one buffer.
    if (n > 1) h.append(i ? ", " : "").append(taken[i].limiter->limit_field());
    char buf[48];
    char* end = buf + sizeof buf;
    char* b = end;
    if (i + 1 == n) {  // the line's end, in the same append
      *--b = '\n';
      *--b = '\r';
    }
    b = digits(b, whole_seconds(taken[i].v.reset_us));
    b -= 3;
    std::memcpy(b, ";t=", 3);
    b = digits(b, taken[i].v.remaining);
    h.append(b, static_cast<size_t>(end - b));
  }
  if (!refused_by) return true;
  h.append("Retry-After: ");
  http::append_uint(h, std::max<uint64_t>(1, whole_seconds(retry_us)));
  h.append("\r\n");
  send_error(429, "rate_limited", "rate limit '" + refused_by->policy().name + "' refused this request; retry after the Retry-After seconds",
             c_.close_after_);
  return false;
}

}  // namespace sy::server
