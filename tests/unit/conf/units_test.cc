// Durations, sizes, addresses and percentages as the config language writes them.
#include <doctest.h>

#include "conf/units.h"

using namespace sy::conf;

TEST_CASE("durations") {
  Millis m;
  CHECK(parse_duration("250ms", m).empty());
  CHECK(m.count() == 250);
  CHECK(parse_duration("5s", m).empty());
  CHECK(m.count() == 5000);
  CHECK(parse_duration("2m", m).empty());
  CHECK(m.count() == 120000);
  CHECK(parse_duration("1.5s", m).empty());
  CHECK(m.count() == 1500);
  CHECK(parse_duration("0", m).empty());
  CHECK(m.count() == 0);
  CHECK_FALSE(parse_duration("5", m).empty());
  CHECK_FALSE(parse_duration("5 s", m).empty());
  CHECK_FALSE(parse_duration("s", m).empty());
  CHECK_FALSE(parse_duration("-1s", m).empty());
  CHECK_FALSE(parse_duration("1y", m).empty());
}

TEST_CASE("sizes") {
  uint64_t v;
  CHECK(parse_size("512", v).empty());
  CHECK(v == 512);
  CHECK(parse_size("64KiB", v).empty());
  CHECK(v == 65536);
  CHECK(parse_size("1MiB", v).empty());
  CHECK(v == 1048576);
  CHECK_FALSE(parse_size("12XB", v).empty());
  CHECK_FALSE(parse_size("", v).empty());
}

TEST_CASE("addresses") {
  Address a;
  CHECK(parse_address("127.0.0.1:8080", a, false).empty());
  CHECK(a.text == "127.0.0.1:8080");
  CHECK(a.port() == 8080);
  CHECK(a.is_loopback());
  CHECK(parse_address("[::1]:80", a, false).empty());
  CHECK(a.text == "[::1]:80");
  CHECK(a.is_loopback());
  CHECK(parse_address("localhost:9", a, false).empty());
  CHECK(a.text == "127.0.0.1:9");
  CHECK(parse_address(":8080", a, false).empty());
  CHECK(a.is_unspecified());
  CHECK_FALSE(parse_address("127.0.0.1:0", a, false).empty());
  CHECK(parse_address("127.0.0.1:0", a, true).empty());
  CHECK_FALSE(parse_address("127.0.0.1:65536", a, false).empty());
  CHECK_FALSE(parse_address("example.com:80", a, false).empty());
  CHECK_FALSE(parse_address("::1:80", a, false).empty());
  CHECK_FALSE(parse_address("nowhere", a, false).empty());
}

TEST_CASE("percentages") {
  double d;
  CHECK(parse_percent("10%", d).empty());
  CHECK(d == doctest::Approx(0.1));
  CHECK(parse_percent("0.25", d).empty());
  CHECK(d == doctest::Approx(0.25));
  CHECK_FALSE(parse_percent("150%", d).empty());
}

TEST_CASE("status ranges: one parser for the config and the registration documents") {
  std::pair<int, int> r;
  CHECK(sy::conf::parse_status_range("200-399", r).empty());
  CHECK(r == std::pair<int, int>{200, 399});
  CHECK(sy::conf::parse_status_range("204", r).empty());
  CHECK(r == std::pair<int, int>{204, 204});
  for (const char* bad : {"", "-", "200-", "-300", "200-300x", "99", "600", "300-200", "2OO", " 200", "200 - 300"})
    CHECK_MESSAGE(!sy::conf::parse_status_range(bad, r).empty(), bad);
}
