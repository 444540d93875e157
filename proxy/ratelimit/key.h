// What a request's bucket is keyed by (rate_limits.X.key), and the client address behind trusted
// proxies. Pure: no I/O; the fuzz-free parsing of X-Forwarded-For is unit-tested.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "proxy/http/head.h"

namespace sy::ratelimit {

// The client a source_ip key means: the peer, unless the peer is one of `trusted` — then the
// nearest address of X-Forwarded-For (read from its right end, every such header in order) that
// is not trusted itself, as nginx's real_ip_recursive and HAProxy's trusted-proxies do. A chain
// made only of trusted addresses gives its leftmost one; a malformed entry ends the walk there
// (the client wrote it: the hop before it is the last one we can believe).
std::string_view client_address(std::string_view peer, const http::MessageHead& req,
                                const std::vector<conf::Cidr>& trusted);

struct KeyInputs {
  std::string_view peer;     // the connection's peer IP
  std::string_view route;    // the matched route's identity ("host|prefix"), "" for Host routing
  std::string_view service;  // the routed service
  const std::vector<conf::Cidr>* trusted = nullptr;
};

// The key of `req` under `policy`. false: the request has no such key (key: header:NAME and the
// header is absent), so this policy does not apply to it. Inline, with the peer taken as it is
// when no proxy is trusted: it runs on every limited request (~35 instructions saved).
inline bool key_of(const conf::RateLimit& policy, const http::MessageHead& req, const KeyInputs& in,
                   std::string_view& key) {
  switch (policy.key) {
    case conf::RateLimit::Key::kSourceIp:
      key = in.trusted && !in.trusted->empty() ? client_address(in.peer, req, *in.trusted) : in.peer;
      return true;
    case conf::RateLimit::Key::kHeader:
      return req.find(policy.header, key);
    case conf::RateLimit::Key::kRoute:
      key = in.route;
      return true;
    case conf::RateLimit::Key::kService:
      key = in.service;
      return true;
    case conf::RateLimit::Key::kNone:
      key = {};
      return true;
  }
  return false;
}

}  // namespace sy::ratelimit
