// The Host header as routes compare it: "Shop.Example.com:8080" → "shop.example.com" (lower case,
// port and one trailing dot removed; an IPv6 literal keeps its brackets). Pure.
#pragma once

#include <string>
#include <string_view>

#include "proxy/http/ascii.h"

namespace sy::http {

// Into `out` (cleared first): a buffer reused across requests allocates only while it grows.
inline void normalize_host(std::string_view host, std::string& out) {
  std::string_view h;
  if (!host.empty() && host[0] == '[') {
    const size_t close = host.find(']');
    h = host.substr(0, close == std::string_view::npos ? host.size() : close + 1);
  } else {
    h = host.substr(0, host.find(':'));
  }
  if (!h.empty() && h.back() == '.') h.remove_suffix(1);
  out.assign(h);
  ascii_lower_in_place(out);
}

inline std::string normalize_host(std::string_view host) {
  std::string out;
  normalize_host(host, out);
  return out;
}

}  // namespace sy::http
