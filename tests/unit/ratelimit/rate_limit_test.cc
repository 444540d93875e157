// Rate limits: the GCRA bucket with an injected clock (exact counts at boundaries, refill,
// Retry-After), the LRU key table, X-Forwarded-For behind trusted proxies, and the config's
// policies with positions.
#include <doctest.h>

#include <cstring>
#include <list>
#include <map>
#include <set>
#include <thread>

#include "conf/config.h"
#include "proxy/http/head.h"
#include "proxy/ratelimit/bucket.h"
#include "proxy/ratelimit/key.h"
#include "proxy/ratelimit/key_table.h"
#include "proxy/ratelimit/limiter.h"

using namespace sy;
using ratelimit::Gcra;

namespace {

conf::Rate rate(const char* s) {
  conf::Rate r;
  REQUIRE(conf::parse_rate(s, r).empty());
  return r;
}

conf::RateLimit policy(const char* r, uint64_t burst, conf::RateLimit::Key key = conf::RateLimit::Key::kSourceIp,
                       uint64_t max_keys = 100000) {
  conf::RateLimit p;
  p.name = "p";
  p.rate = rate(r);
  p.burst = burst;
  p.key = key;
  p.max_keys = max_keys;
  return p;
}

// Requests at time t (µs) until one is refused; how many passed.
int drain(const Gcra& g, int64_t& tat, int64_t t) {
  int n = 0;
  while (g.take(tat, t).pass) ++n;
  return n;
}

http::MessageHead head_with(std::initializer_list<std::pair<const char*, const char*>> headers) {
  http::MessageHead h;
  for (auto [n, v] : headers) {
    h.add_field(n, std::strlen(n));
    h.add_value(v, std::strlen(v));
  }
  return h;
}

}  // namespace

TEST_CASE("a full bucket passes exactly burst, then one per token, never more") {
  const Gcra g(rate("10/s"), 5);
  int64_t tat = 0;
  CHECK(drain(g, tat, 0) == 5);
  // 10/s = one token per 100 ms: at 99.999 ms nothing, at 100 ms exactly one.
  CHECK_FALSE(g.take(tat, 99999).pass);
  CHECK(g.take(tat, 100000).pass);
  CHECK_FALSE(g.take(tat, 100000).pass);
  // Over any t from a full bucket: burst + floor(rate * t) in all.
  int64_t tat2 = 0;
  int passed = 0;
  int64_t last = 0;
  for (int64_t t = 0; t <= 3000000; t += 7919) {
    passed += drain(g, tat2, t);
    last = t;
  }
  CHECK(passed == 5 + static_cast<int>(last * 10 / 1000000));  // 2.993 s: 5 + 29
}

TEST_CASE("the bucket refills to burst and no further; rates per minute and hour are exact") {
  const Gcra g(rate("10/s"), 5);
  int64_t tat = 0;
  CHECK(drain(g, tat, 0) == 5);
  CHECK(drain(g, tat, 60000000) == 5);  // a minute later: full, not 600
  const Gcra m(rate("7/m"), 1);
  int64_t t2 = 0;
  int passed = 0;
  for (int64_t t = 0; t < 60000000; t += 1000) passed += drain(m, t2, t);
  CHECK(passed == 7);  // 1 at 0, then one each 60/7 s: 6 more before the minute ends
  const Gcra h(rate("3/h"), 3);
  int64_t t3 = 0;
  CHECK(drain(h, t3, 0) == 3);
  CHECK_FALSE(h.take(t3, 1199999999).pass);
  CHECK(h.take(t3, 1200000000).pass);  // 20 minutes
}

TEST_CASE("a refusal says when the next token comes, and what is left and when the bucket is full") {
  const Gcra g(rate("2/s"), 3);
  int64_t tat = 0;
  auto v = g.take(tat, 0);
  CHECK(v.pass);
  CHECK(v.remaining == 2);
  CHECK(v.reset_us == 500000);
  g.take(tat, 0);
  v = g.take(tat, 0);
  CHECK(v.remaining == 0);
  CHECK(v.reset_us == 1500000);
  v = g.take(tat, 100000);
  CHECK_FALSE(v.pass);
  CHECK(v.retry_after_us == 400000);
  CHECK(g.available(tat, 100000) == 0);
  CHECK(g.available(tat, 2000000) == 3);
}

TEST_CASE("one atomic bucket shared by threads passes exactly burst") {
  const Gcra g(rate("1/h"), 1000);
  std::atomic<int64_t> tat{0};
  std::atomic<int> passed{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&] {
      for (int k = 0; k < 1000; ++k)
        if (g.take(tat, 0).pass) ++passed;
    });
  for (auto& t : ts) t.join();
  CHECK(passed == 1000);
}

TEST_CASE("keys have buckets of their own; the least recently used is evicted and counted") {
  ratelimit::Limiter l(policy("1/h", 2, conf::RateLimit::Key::kSourceIp, 32), 0);
  CHECK(l.take("a", 0).pass);
  CHECK(l.take("a", 0).pass);
  CHECK_FALSE(l.take("a", 0).pass);
  CHECK(l.take("b", 0).pass);  // another key, another bucket
  CHECK(l.keys() == 2);
  CHECK(l.refused() == 1);
  // 32 keys at most (two per shard, so "a" and "b" fit whichever shards they hash to): many more
  // push the old ones out.
  for (int i = 0; i < 1000; ++i) l.take("k" + std::to_string(i), 0);
  CHECK(l.keys() <= 32);
  CHECK(l.evictions() >= 1000 + 2 - 32);
  // An evicted key comes back with a full bucket (why max_keys is large by default).
  CHECK(l.take("a", 0).pass);
}

TEST_CASE("the key table agrees with a plain LRU model through inserts, hits and evictions") {
  // A reference LRU (std::list + std::map) driven by the same random stream: after every step the
  // table holds the same keys with the same buckets, in the same order. Small key space and a
  // deliberately weak hash (many collisions in probe runs) exercise backward-shift deletion.
  for (uint64_t (*hash)(std::string_view) : {+[](std::string_view k) { return ratelimit::hash_key(k, 7); },
                                              +[](std::string_view k) { return uint64_t{k.size()} << 4; }}) {
    ratelimit::KeyTable t;
    t.set_capacity(37);
    std::list<std::pair<std::string, int64_t>> model;
    std::map<std::string, std::list<std::pair<std::string, int64_t>>::iterator> where;
    uint64_t rnd = 12345;
    uint64_t evictions = 0, expected_evictions = 0;
    for (int step = 0; step < 20000; ++step) {
      rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
      // Lengths 2 to 20 (every compare path of the table), keys of one length differing inside.
      const uint64_t num = (rnd >> 33) % 60;
      const std::string key = "k" + std::to_string(num) + std::string(num % 19, '.');
      bool evicted = false;
      int64_t* tat = t.find_or_insert(key, hash(key), evicted);
      evictions += evicted;
      auto it = where.find(key);
      if (it != where.end()) {
        model.splice(model.begin(), model, it->second);
      } else {
        if (model.size() == 37) {
          where.erase(model.back().first);
          model.pop_back();
          ++expected_evictions;
        }
        model.emplace_front(key, 0);
        where[key] = model.begin();
      }
      REQUIRE(*tat == model.front().second);
      *tat = ++model.front().second;  // each bucket counts its hits: a mixed-up bucket shows
      REQUIRE(t.size() == model.size());
    }
    CHECK(evictions == expected_evictions);
    CHECK(evictions > 1000);
    auto m = model.begin();
    size_t seen = 0;
    t.each_recent([&](std::string_view k, int64_t tat) {
      CHECK(k == m->first);
      CHECK(tat == m->second);
      ++m;
      ++seen;
      return true;
    });
    CHECK(seen == model.size());
  }
}

TEST_CASE("a keyed limiter shared by threads passes exactly burst per key") {
  // Four threads on the same eight keys (the shards' spin locks) and on keys of their own.
  ratelimit::Limiter l(policy("1/h", 100, conf::RateLimit::Key::kHeader), 0);
  std::atomic<int> shared{0}, own{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < 4; ++w)
    ts.emplace_back([&, w] {
      for (int k = 0; k < 400; ++k)
        for (int key = 0; key < 8; ++key) {
          if (l.take("shared" + std::to_string(key), 0).pass) ++shared;
          if (l.take("own" + std::to_string(w * 8 + key), 0).pass) ++own;
        }
    });
  for (auto& t : ts) t.join();
  CHECK(shared == 8 * 100);
  CHECK(own == 32 * 100);
  CHECK(l.keys() == 40);
}

TEST_CASE("the key hash spreads keys that differ in one byte, and depends on the seed") {
  std::set<uint64_t> seen;
  for (int i = 0; i < 256; ++i) {
    std::string k = "10.0.0." + std::to_string(i);
    seen.insert(ratelimit::hash_key(k, 1) % 16);
  }
  CHECK(seen.size() == 16);  // every shard used
  CHECK(ratelimit::hash_key("10.0.0.1", 1) != ratelimit::hash_key("10.0.0.1", 2));
  CHECK(ratelimit::hash_key("", 1) != ratelimit::hash_key("a", 1));
  const std::string long_a(100, 'a');
  std::string long_b = long_a;
  long_b[3] = 'b';
  CHECK(ratelimit::hash_key(long_a, 1) != ratelimit::hash_key(long_b, 1));
}

TEST_CASE("a share of 1/n takes 1/n of the burst and of the rate; the whole again when n drops") {
  ratelimit::Limiter l(policy("10/s", 10, conf::RateLimit::Key::kHeader), 0);
  l.set_share(2);
  int passed = 0;
  while (l.take("k", 0).pass) ++passed;
  CHECK(passed == 5);
  // 5/s now: one token per 200 ms.
  CHECK_FALSE(l.take("k", 199999).pass);
  CHECK(l.take("k", 200000).pass);
  passed = 0;
  while (l.take("fresh", 300000).pass) ++passed;
  CHECK(passed == 5);
  l.set_share(1);
  passed = 0;
  while (l.take("new", 300000).pass) ++passed;
  CHECK(passed == 10);  // a key seen only now gets the whole burst
}

TEST_CASE("a very long key is kept as its hash, so hostile header values cost no more than short ones") {
  ratelimit::Limiter l(policy("1/h", 1, conf::RateLimit::Key::kHeader), 0);
  const std::string big(60000, 'x');
  CHECK(l.take(big, 0).pass);
  CHECK_FALSE(l.take(big, 0).pass);  // the same bucket again
  CHECK(l.take(big + "y", 0).pass);  // another value, another bucket
  auto keys = l.recent(10, 0);
  REQUIRE(keys.size() == 2);
  for (const auto& k : keys) CHECK(k.key.size() == 17);
}

TEST_CASE("the recent-keys listing shows every key when there are no more than asked, whatever shards they share") {
  // Each limiter draws its own hash seed, so these keys fall into different shard patterns.
  for (int round = 0; round < 50; ++round) {
    ratelimit::Limiter l(policy("1/h", 5, conf::RateLimit::Key::kHeader), 0);
    std::set<std::string> want;
    for (int i = 0; i < 3; ++i) {
      want.insert("tenant-" + std::to_string(i));
      CHECK(l.take("tenant-" + std::to_string(i), 0).pass);
    }
    std::set<std::string> got;
    for (const auto& k : l.recent(3, 0)) got.insert(k.key);
    REQUIRE(got == want);
  }
  ratelimit::Limiter l(policy("1/h", 5, conf::RateLimit::Key::kHeader), 0);
  for (int i = 0; i < 100; ++i) CHECK(l.take("k" + std::to_string(i), 0).pass);
  auto ten = l.recent(10, 0);
  CHECK(ten.size() == 10);
  std::set<std::string> distinct;
  for (const auto& k : ten) distinct.insert(k.key);
  CHECK(distinct.size() == 10);
  CHECK(l.recent(1000, 0).size() == 100);
}

TEST_CASE("key: none is one bucket whatever the key") {
  ratelimit::Limiter l(policy("1/h", 3, conf::RateLimit::Key::kNone), 1000);
  CHECK(l.take("x", 1000).pass);
  CHECK(l.take("y", 1000).pass);
  CHECK(l.take("", 1000).pass);
  CHECK_FALSE(l.take("z", 1000).pass);
  CHECK(l.keys() == 0);
}

TEST_CASE("X-Forwarded-For is believed only from trusted proxies, read from the right") {
  std::vector<conf::Cidr> trusted(2);
  REQUIRE(conf::parse_cidr("10.0.0.0/8", trusted[0]).empty());
  REQUIRE(conf::parse_cidr("::1", trusted[1]).empty());
  auto h = head_with({{"X-Forwarded-For", "203.0.113.9, 198.51.100.7"}, {"x-forwarded-for", "10.1.1.1"}});
  CHECK(ratelimit::client_address("192.0.2.1", h, trusted) == "192.0.2.1");  // an untrusted peer: itself
  CHECK(ratelimit::client_address("10.2.3.4", h, trusted) == "198.51.100.7");  // first untrusted from the right
  CHECK(ratelimit::client_address("::1", h, trusted) == "198.51.100.7");
  CHECK(ratelimit::client_address("10.2.3.4", h, {}) == "10.2.3.4");  // nobody trusted
  auto all_trusted = head_with({{"X-Forwarded-For", "10.9.9.9, 10.8.8.8"}});
  CHECK(ratelimit::client_address("10.2.3.4", all_trusted, trusted) == "10.9.9.9");
  auto garbage = head_with({{"X-Forwarded-For", "203.0.113.9, not-an-ip, 10.8.8.8"}});
  CHECK(ratelimit::client_address("10.2.3.4", garbage, trusted) == "10.8.8.8");  // the walk ends at garbage
  auto none = head_with({});
  CHECK(ratelimit::client_address("10.2.3.4", none, trusted) == "10.2.3.4");
}

TEST_CASE("CIDR blocks match their addresses only") {
  conf::Cidr c;
  REQUIRE(conf::parse_cidr("192.168.0.0/23", c).empty());
  CHECK(c.contains("192.168.1.255"));
  CHECK_FALSE(c.contains("192.168.2.0"));
  CHECK(c.contains("::ffff:192.168.0.1"));  // IPv4-mapped
  REQUIRE(conf::parse_cidr("2001:db8::/32", c).empty());
  CHECK(c.contains("2001:db8:ffff::1"));
  CHECK_FALSE(c.contains("2001:db9::1"));
  CHECK_FALSE(c.contains("10.0.0.1"));
  CHECK_FALSE(conf::parse_cidr("10.0.0.0/33", c).empty());
  CHECK_FALSE(conf::parse_cidr("10.0.0/8", c).empty());
  CHECK_FALSE(conf::parse_cidr("10.0.0.0/", c).empty());
}

TEST_CASE("rate-limit config: policies, references and errors with positions") {
  conf::Config c;
  std::vector<std::string> e;
  REQUIRE_MESSAGE(conf::load_string(R"(
rate_limits:
  per_client: { rate: 100/s, burst: 200, key: source_ip, mode: dry_run, max_keys: 5000 }
  by_tenant: { rate: 600/m, key: "header:X-Tenant" }
client: { trusted_proxies: [10.0.0.0/8, "::1"] }
routes: [ { match: { path_prefix: /api }, service: orders, rate_limit: per_client } ]
services: { orders: { rate_limit: by_tenant } }
)", "t.yaml", c, e), (e.empty() ? "" : e[0]));
  const auto& p = c.rate_limits.at("per_client");
  CHECK(p.rate.tokens == 100);
  CHECK(p.burst == 200);
  CHECK(p.mode == conf::RateLimit::Mode::kDryRun);
  CHECK(p.max_keys == 5000);
  const auto& t = c.rate_limits.at("by_tenant");
  CHECK(t.key == conf::RateLimit::Key::kHeader);
  CHECK(t.header == "x-tenant");
  CHECK(t.burst == 10);  // default: one unit's worth per second (600/m = 10/s), at least 1
  CHECK(c.routes.at(0).rate_limit.name == "per_client");
  CHECK(c.services.at("orders").rate_limit.name == "by_tenant");
  CHECK(c.client.trusted_proxies.size() == 2);

  auto errs = [](const char* text) {
    conf::Config cc;
    std::vector<std::string> ee;
    conf::load_string(text, "t.yaml", cc, ee);
    return ee;
  };
  auto one = [&](const char* text, const char* where, const char* what) {
    auto ee = errs(text);
    REQUIRE(ee.size() >= 1);
    CHECK_MESSAGE(ee[0].find(where) == 0, ee[0]);
    CHECK_MESSAGE(ee[0].find(what) != std::string::npos, ee[0]);
  };
  one("rate_limits:\n  a: { rate: 0/s }\n", "t.yaml:2:", "at least 1");
  one("rate_limits:\n  a: { rate: 10/s, burst: 0 }\n", "t.yaml:2:", "burst");
  one("rate_limits:\n  a: { rate: 10/d }\n", "t.yaml:2:", "unit");
  one("rate_limits:\n  a: { burst: 3 }\n", "t.yaml:2:", "needs a 'rate'");
  one("rate_limits:\n  a: { rate: 1/s, key: cookie }\n", "t.yaml:2:", "source_ip, header:NAME");
  one("rate_limits:\n  a: { rate: 1/s }\nroutes:\n  - { service: x, rate_limit: b }\n", "t.yaml:4:", "'b', which is not a policy");
  one("services:\n  x:\n    rate_limit: nope\n", "t.yaml:3:", "not a policy");
  one("client:\n  trusted_proxies: [10.0.0.0/99]\n", "t.yaml:2:", "prefix length");
  one("rate_limits:\n  a: { rate: 1/s, scope: global }\n", "t.yaml:2:", "needs registry.backend: etcd");
}
