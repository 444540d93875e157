// Parsers for durations, sizes, percentages and socket addresses.
#include "conf/units.h"

#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <cstring>

namespace sy::conf {

namespace {

bool parse_decimal(std::string_view s, double& out) {
  if (s.empty()) return false;
  size_t i = 0;
  double v = 0;
  bool digits = false;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    v = v * 10 + (s[i] - '0');
    ++i;
    digits = true;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    double scale = 0.1;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      v += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
      digits = true;
    }
  }
  if (!digits || i != s.size()) return false;
  out = v;
  return true;
}

size_t number_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
  return i;
}

}  // namespace

std::string parse_duration(std::string_view s, Millis& out) {
  size_t n = number_prefix(s);
  double v;
  if (n == 0 || !parse_decimal(s.substr(0, n), v))
    return "bad duration '" + std::string(s) + "' (expected e.g. 250ms, 5s, 2m)";
  std::string_view unit = s.substr(n);
  double ms;
  if (unit == "ms") ms = v;
  else if (unit == "s") ms = v * 1000;
  else if (unit == "m") ms = v * 60000;
  else if (unit == "h") ms = v * 3600000;
  else if (unit.empty() && v == 0) ms = 0;
  else return "bad duration '" + std::string(s) + "' (expected a unit: ms, s, m, h)";
  if (ms > 365.0 * 24 * 3600 * 1000) return "duration '" + std::string(s) + "' is too long";
  out = Millis(static_cast<int64_t>(std::llround(ms)));
  return "";
}

std::string parse_size(std::string_view s, uint64_t& out) {
  size_t n = number_prefix(s);
  double v;
  if (n == 0 || !parse_decimal(s.substr(0, n), v))
    return "bad size '" + std::string(s) + "' (expected e.g. 512, 64KiB, 1MiB)";
  std::string_view unit = s.substr(n);
  double mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "KB" || unit == "k" || unit == "K") mult = 1024.0;
  else if (unit == "MiB" || unit == "MB" || unit == "M") mult = 1024.0 * 1024;
  else if (unit == "GiB" || unit == "GB" || unit == "G") mult = 1024.0 * 1024 * 1024;
  else return "bad size '" + std::string(s) + "' (units: B, KiB, MiB, GiB)";
  double bytes = v * mult;
  if (bytes > 1e18) return "size '" + std::string(s) + "' is too large";
  out = static_cast<uint64_t>(bytes);
  return "";
}

std::string parse_percent(std::string_view s, double& out) {
  double v;
  if (!s.empty() && s.back() == '%') {
    if (!parse_decimal(s.substr(0, s.size() - 1), v)) return "bad percentage '" + std::string(s) + "'";
    v /= 100;
  } else if (!parse_decimal(s, v)) {
    return "bad percentage '" + std::string(s) + "' (expected e.g. 10% or 0.1)";
  }
  if (v < 0 || v > 1) return "percentage '" + std::string(s) + "' out of range 0%..100%";
  out = v;
  return "";
}

std::string format_address(const sockaddr* sa) {
  char ip[INET6_ADDRSTRLEN] = {0};
  if (sa->sa_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    // Built with append(): GCC 12 at -O3 warns falsely (-Wrestrict) on operator+ chains here.
    std::string out(1, '[');
    out.append(ip).append("]:").append(std::to_string(ntohs(a->sin6_port)));
    return out;
  }
  auto* a = reinterpret_cast<const sockaddr_in*>(sa);
  inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
  std::string out(ip);
  out.append(1, ':').append(std::to_string(ntohs(a->sin_port)));
  return out;
}

std::string parse_address(std::string_view s, Address& out, bool allow_port0) {
  std::string host;
  std::string_view port_s;
  const std::string bad = "bad address '" + std::string(s) + "'";
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return bad + " (expected [v6]:port)";
    host = std::string(s.substr(1, close - 1));
    port_s = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) return bad + " (expected host:port)";
    host = std::string(s.substr(0, colon));
    port_s = s.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad + " (write IPv6 as [addr]:port)";
  }
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_s.data(), port_s.data() + port_s.size(), port);
  if (port_s.empty() || ec != std::errc() || p != port_s.data() + port_s.size() || port > 65535)
    return bad + " (port must be 0..65535)";
  if (port == 0 && !allow_port0) return bad + " (port 0 is not a usable address)";
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  Address a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    a.ss = {};
    inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr);
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
  } else {
    return bad + " (host must be an IP address or localhost; names are not resolved)";
  }
  a.text = format_address(a.sa());
  out = a;
  return "";
}

Address Address::loopback(uint16_t port) {
  Address a;
  parse_address("127.0.0.1:" + std::to_string(port), a, true);
  return a;
}

uint16_t Address::port() const {
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
}

bool Address::is_loopback() const {
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
  }
  auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
  return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
}

Address Address::unmapped() const {
  if (ss.ss_family != AF_INET6) return *this;
  auto* a6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  if (!IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) return *this;
  Address out;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&out.ss);
  a4->sin_family = AF_INET;
  a4->sin_port = a6->sin6_port;
  std::memcpy(&a4->sin_addr, &a6->sin6_addr.s6_addr[12], 4);
  out.text = format_address(out.sa());
  return out;
}

bool Address::is_unspecified() const {
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    return IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr);
  }
  return reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr == 0;
}

std::string parse_status_range(std::string_view s, std::pair<int, int>& out) {
  const size_t dash = s.find('-');
  const std::string_view a = s.substr(0, dash);
  const std::string_view b = dash == std::string_view::npos ? a : s.substr(dash + 1);
  int lo = 0, hi = 0;
  auto r1 = std::from_chars(a.data(), a.data() + a.size(), lo);
  auto r2 = std::from_chars(b.data(), b.data() + b.size(), hi);
  if (a.empty() || b.empty() || r1.ec != std::errc() || r1.ptr != a.data() + a.size() || r2.ec != std::errc() ||
      r2.ptr != b.data() + b.size() || lo < 100 || hi > 599 || lo > hi)
    return "'" + std::string(s) + "' is not a status or range of statuses like 200-399";
  out = {lo, hi};
  return "";
}

std::string Address::host() const {
  std::string h = text.substr(0, text.rfind(':'));
  if (h.size() >= 2 && h.front() == '[') h = h.substr(1, h.size() - 2);
  return h;
}

namespace {

// `ip` as 16 bytes, IPv4 in the first 4 (an IPv4-mapped IPv6 address as IPv4). false: not an IP.
bool ip_bytes(std::string_view ip, uint8_t out[16], bool& v6) {
  char buf[INET6_ADDRSTRLEN + 1];
  if (ip.empty() || ip.size() >= sizeof buf) return false;
  ip.copy(buf, ip.size());
  buf[ip.size()] = 0;
  std::memset(out, 0, 16);
  in_addr a4;
  if (inet_pton(AF_INET, buf, &a4) == 1) {
    std::memcpy(out, &a4, 4);
    v6 = false;
    return true;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, buf, &a6) != 1) return false;
  if (IN6_IS_ADDR_V4MAPPED(&a6)) {
    std::memcpy(out, a6.s6_addr + 12, 4);
    v6 = false;
    return true;
  }
  std::memcpy(out, a6.s6_addr, 16);
  v6 = true;
  return true;
}

}  // namespace

bool Cidr::contains(std::string_view ip) const {
  uint8_t b[16];
  bool is6 = false;
  if (!ip_bytes(ip, b, is6) || is6 != v6) return false;
  const unsigned full = bits / 8, rest = bits % 8;
  if (std::memcmp(b, bytes, full) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (b[full] & mask) == (bytes[full] & mask);
}

std::string parse_cidr(std::string_view s, Cidr& out) {
  const size_t slash = s.find('/');
  Cidr c;
  if (!ip_bytes(s.substr(0, slash), c.bytes, c.v6)) return "'" + std::string(s) + "' is not an IP address or CIDR block";
  const unsigned max = c.v6 ? 128 : 32;
  unsigned bits = max;
  if (slash != std::string_view::npos) {
    const std::string_view b = s.substr(slash + 1);
    auto r = std::from_chars(b.data(), b.data() + b.size(), bits);
    if (b.empty() || r.ec != std::errc() || r.ptr != b.data() + b.size() || bits > max)
      return "'" + std::string(s) + "': the prefix length must be 0-" + std::to_string(max);
  }
  c.bits = static_cast<uint8_t>(bits);
  // Host bits cleared, so equal blocks compare equal.
  for (unsigned i = 0; i < 16; ++i) {
    const unsigned keep = bits >= (i + 1) * 8 ? 8 : bits > i * 8 ? bits - i * 8 : 0;
    c.bytes[i] = static_cast<uint8_t>(c.bytes[i] & (keep == 0 ? 0 : 0xff << (8 - keep)));
  }
  out = c;
  return "";
}

std::string parse_rate(std::string_view s, Rate& out) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return "'" + std::string(s) + "' must be a rate such as 100/s, 600/m or 10/h";
  const std::string_view n = s.substr(0, slash), unit = s.substr(slash + 1);
  Rate r;
  auto res = std::from_chars(n.data(), n.data() + n.size(), r.tokens);
  if (n.empty() || res.ec != std::errc() || res.ptr != n.data() + n.size())
    return "'" + std::string(s) + "' must start with a whole number of tokens";
  if (unit == "s") r.per_us = 1000000;
  else if (unit == "m") r.per_us = 60000000;
  else if (unit == "h") r.per_us = UINT64_C(3600000000);
  else return "'" + std::string(s) + "': the unit must be s, m or h";
  if (r.tokens == 0) return "'" + std::string(s) + "': the rate must be at least 1";
  // The bucket keeps time in microseconds times the rate in one 64-bit word (rate_limit.h):
  // up to 100,000 tokens per unit that lasts years of uptime.
  if (r.tokens > 100000) return "'" + std::string(s) + "': at most 100000 tokens per unit";
  out = r;
  return "";
}

}  // namespace sy::conf
