// ASCII case folding, the one definition: header names, hosts, Consul's keys, Eureka's app names.
// Only A-Z change (no locale: bytes beyond ASCII are left as they are, as HTTP wants).
#pragma once

#include <string>
#include <string_view>

namespace sy::http {

constexpr char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

inline void ascii_lower_in_place(std::string& s) {
  for (auto& c : s) c = ascii_lower(c);
}

inline std::string ascii_lowered(std::string_view s) {
  std::string out(s);
  ascii_lower_in_place(out);
  return out;
}

}  // namespace sy::http
