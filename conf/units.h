// Value types of the config language: durations ("250ms"), sizes ("64KiB"), addresses
// ("host:port", "[v6]:port"). Parsing returns an error string ("" = ok); no exceptions.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace sy::conf {

using Millis = std::chrono::milliseconds;

// A numeric socket address. Host names other than "localhost" are not resolved: the proxy does
// no blocking DNS, and registrations carry addresses, not names.
struct Address {
  sockaddr_storage ss{};
  std::string text;  // canonical "ip:port" / "[ip]:port"

  static Address loopback(uint16_t port);
  uint16_t port() const;
  std::string host() const;  // the IP as text, without brackets or port
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
  bool is_loopback() const;
  bool is_unspecified() const;  // 0.0.0.0 / ::
  // An IPv4-mapped IPv6 address ([::ffff:127.0.0.1]:80) as the IPv4 address it is; any other
  // address as it is.
  Address unmapped() const;
  bool operator==(const Address& o) const { return text == o.text; }
};

// "5s", "250ms", "2m", "1h", "1.5s", "0". Returns "" on success.
std::string parse_duration(std::string_view s, Millis& out);
// "512", "64KiB", "1MiB", "2GiB", also "64KB"/"1MB" (powers of 1000 are not used: KB = KiB).
std::string parse_size(std::string_view s, uint64_t& out);
// "127.0.0.1:8080", "[::1]:80", "localhost:9000", ":8080" (= 0.0.0.0). Port 0 allowed when
// `allow_port0` (listeners: the kernel picks one).
std::string parse_address(std::string_view s, Address& out, bool allow_port0);
// "200" or "200-399" → [lo, hi] within 100..599. Returns "" on success.
std::string parse_status_range(std::string_view s, std::pair<int, int>& out);
// "10%" or "0.1" → fraction.
std::string parse_percent(std::string_view s, double& out);

std::string format_address(const sockaddr* sa);

// "10.0.0.0/8", "2001:db8::/32", or one address ("10.1.2.3" = /32, "::1" = /128).
struct Cidr {
  uint8_t bytes[16] = {};  // network address, IPv4 in the first 4
  uint8_t bits = 0;
  bool v6 = false;
  // `ip` as text (an IPv4-mapped IPv6 address counts as its IPv4 address).
  bool contains(std::string_view ip) const;
  bool operator==(const Cidr&) const = default;
};
std::string parse_cidr(std::string_view s, Cidr& out);

// A rate: "100/s", "600/m", "10/h" (a whole number of tokens per second, minute or hour).
// `per_us` is the unit in microseconds (1e6, 6e7, 3.6e9).
struct Rate {
  uint64_t tokens = 0;
  uint64_t per_us = 1000000;
  double per_second() const { return static_cast<double>(tokens) * 1e6 / static_cast<double>(per_us); }
  bool operator==(const Rate&) const = default;
};
std::string parse_rate(std::string_view s, Rate& out);

}  // namespace sy::conf
