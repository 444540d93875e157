#include "proxy/ratelimit/key.h"

namespace sy::ratelimit {

namespace {

bool trusted_ip(std::string_view ip, const std::vector<conf::Cidr>& trusted) {
  for (const auto& c : trusted)
    if (c.contains(ip)) return true;
  return false;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view client_address(std::string_view peer, const http::MessageHead& req,
                                const std::vector<conf::Cidr>& trusted) {
  if (trusted.empty() || !trusted_ip(peer, trusted)) return peer;
  std::string_view result = peer;
  // Headers from the last to the first, each list from its right end.
  for (size_t h = req.count(); h-- > 0;) {
    if (!http::iequals(req.name(h), "x-forwarded-for")) continue;
    std::string_view list = req.value(h);
    while (!list.empty()) {
      const size_t comma = list.rfind(',');
      std::string_view item = trim(comma == std::string_view::npos ? list : list.substr(comma + 1));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(0, comma);
      if (item.empty()) continue;
      conf::Cidr probe;
      if (!conf::parse_cidr(item, probe).empty() || item.find('/') != std::string_view::npos) return result;
      result = item;
      if (!trusted_ip(item, trusted)) return result;
    }
  }
  return result;
}

}  // namespace sy::ratelimit
