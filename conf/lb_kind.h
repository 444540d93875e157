// The load-balancing policies by name (services.*.lb), and what a hashing policy hashes
// (services.*.hash_on): parsed once when the config loads, so nothing compares strings later.
// Header-only: proxy/lb's factory switches on these without linking the config loader.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <utility>

namespace sy::conf {

enum class Lb { kRoundRobin, kLeastRequest, kRandom, kRingHash, kMaglev, kEwma };

inline constexpr std::array<std::pair<Lb, std::string_view>, 6> kLbNames{{{Lb::kRoundRobin, "round_robin"},
                                                                          {Lb::kLeastRequest, "least_request"},
                                                                          {Lb::kRandom, "random"},
                                                                          {Lb::kRingHash, "ring_hash"},
                                                                          {Lb::kMaglev, "maglev"},
                                                                          {Lb::kEwma, "ewma"}}};

inline std::string_view lb_name(Lb lb) {
  for (const auto& [k, n] : kLbNames)
    if (k == lb) return n;
  return "round_robin";
}

inline bool parse_lb(std::string_view name, Lb& out) {
  for (const auto& [k, n] : kLbNames)
    if (n == name) {
      out = k;
      return true;
    }
  return false;
}

// "header:NAME", "cookie:NAME" or "source_ip".
struct HashOn {
  enum class Kind { kNone, kHeader, kCookie, kSourceIp };
  Kind kind = Kind::kNone;
  std::string name;  // header or cookie name
  bool operator==(const HashOn&) const = default;
};

inline bool parse_hash_on(std::string_view spec, HashOn& out) {
  if ((spec.rfind("header:", 0) == 0 || spec.rfind("cookie:", 0) == 0) && spec.size() > 7) {
    out.kind = spec[0] == 'h' ? HashOn::Kind::kHeader : HashOn::Kind::kCookie;
    out.name = std::string(spec.substr(7));
    return true;
  }
  if (spec == "source_ip") {
    out = {HashOn::Kind::kSourceIp, ""};
    return true;
  }
  return false;
}

}  // namespace sy::conf
