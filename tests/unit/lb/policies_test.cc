// Policies: exact sequences where deterministic, statistical bounds (fixed seeds) where random.
#include <doctest.h>

#include <deque>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "proxy/lb/load.h"
#include "proxy/lb/maglev.h"
#include "proxy/lb/policy.h"
#include "proxy/lb/ring_hash.h"
#include "proxy/lb/zone_aware.h"

using namespace sy::lb;

namespace {

struct Rng {
  uint64_t s = 42;
  uint64_t next() { return s = mix64(s + 0x9e3779b97f4a7c15ull); }
};

std::vector<EndpointInfo> endpoints(size_t n, std::vector<LoadStats>* loads = nullptr, std::vector<uint32_t> w = {}) {
  static std::deque<std::string> names;  // EndpointInfo holds views: the ids outlive every policy built here
  std::vector<EndpointInfo> eps;
  for (size_t i = 0; i < n; ++i) {
    names.push_back("instance-" + std::to_string(i));
    eps.push_back({w.empty() ? 1u : w[i], names.back(), loads ? &(*loads)[i] : nullptr});
  }
  return eps;
}

std::vector<int> histogram(const Policy& p, size_t n, int picks, Rng& rng, bool hashed = false) {
  std::vector<int> h(n, 0);
  for (int k = 0; k < picks; ++k) {
    PickContext ctx;
    ctx.random = rng.next();
    if (hashed) {
      ctx.has_hash = true;
      ctx.hash = rng.next();
    }
    ++h[static_cast<size_t>(p.pick(ctx))];
  }
  return h;
}

// Fraction of keys whose endpoint (by key) changes between two policies.
double moved(const Policy& a, const Policy& b, const std::vector<EndpointInfo>& ea, const std::vector<EndpointInfo>& eb) {
  Rng rng;
  int moved = 0;
  const int keys = 100000;
  for (int k = 0; k < keys; ++k) {
    PickContext ctx;
    ctx.has_hash = true;
    ctx.hash = rng.next();
    if (ea[static_cast<size_t>(a.pick(ctx))].key != eb[static_cast<size_t>(b.pick(ctx))].key) ++moved;
  }
  return static_cast<double>(moved) / keys;
}

}  // namespace

TEST_CASE("random: weighted shares within 2 % of the weights") {
  auto p = make_policy("random", std::vector<uint32_t>{1, 2, 7});
  Rng rng;
  auto h = histogram(*p, 3, 100000, rng);
  CHECK(h[0] / 100000.0 == doctest::Approx(0.1).epsilon(0.02 / 0.1));
  CHECK(h[1] / 100000.0 == doctest::Approx(0.2).epsilon(0.02 / 0.2));
  CHECK(h[2] / 100000.0 == doctest::Approx(0.7).epsilon(0.02 / 0.7));
}

TEST_CASE("least_request: a busy endpoint gets (almost) nothing; equal loads share evenly") {
  std::vector<LoadStats> loads(4);
  auto eps = endpoints(4, &loads);
  auto p = make_policy("least_request", eps);
  loads[2].active = 50;
  Rng rng;
  auto h = histogram(*p, 4, 40000, rng);
  // P2C: endpoint 2 wins only when paired with itself, which cannot happen (distinct choices).
  CHECK(h[2] == 0);
  for (size_t i : {0u, 1u, 3u}) CHECK(h[i] > 40000 / 3 * 0.9);
}

TEST_CASE("least_request: weights count (active per unit of weight)") {
  std::vector<LoadStats> loads(2);
  auto eps = endpoints(2, &loads, {1, 4});
  auto p = make_policy("least_request", eps);
  loads[0].active = 1;  // cost (1+1)/1 = 2
  loads[1].active = 3;  // cost (3+1)/4 = 1 → cheaper
  PickContext ctx;
  ctx.random = 12345;
  CHECK(p->pick(ctx) == 1);
}

TEST_CASE("ring_hash: same key, same endpoint; balance; ~1/N keys move when one of N leaves") {
  const size_t n = 10;
  auto eps = endpoints(n);
  RingHash ring(eps);
  PickContext ctx;
  ctx.has_hash = true;
  ctx.hash = 987654321;
  int first = ring.pick(ctx);
  for (int k = 0; k < 5; ++k) CHECK(ring.pick(ctx) == first);
  Rng rng;
  auto h = histogram(ring, n, 100000, rng, true);
  for (int c : h) CHECK(std::abs(c - 10000) < 10000 * 0.35);  // vnode ring: within 35 % of fair
  auto fewer = eps;
  fewer.erase(fewer.begin() + 3);
  RingHash ring2(fewer);
  const double m = moved(ring, ring2, eps, fewer);
  MESSAGE("ring_hash: removing 1 of 10 moved " << m * 100 << " % of keys");
  CHECK(m == doctest::Approx(0.10).epsilon(0.3));  // 1/N ± 30 % of it
  auto more = eps;
  more.push_back({1, "instance-new", nullptr});
  RingHash ring3(more);
  const double m2 = moved(ring, ring3, eps, more);
  MESSAGE("ring_hash: adding an 11th moved " << m2 * 100 << " % of keys");
  CHECK(m2 == doctest::Approx(1.0 / 11).epsilon(0.3));
}

TEST_CASE("maglev: prime table, tight balance, ~1/N keys move") {
  const size_t n = 10;
  auto eps = endpoints(n);
  Maglev m(eps);
  CHECK(m.table().size() == 65537);
  std::vector<int> slots(n, 0);
  for (auto e : m.table()) ++slots[e];
  for (int c : slots) CHECK(std::abs(c - 6553) <= 65);  // within 1 % of fair
  auto fewer = eps;
  fewer.erase(fewer.begin() + 3);
  Maglev m2(fewer);
  const double mv = moved(m, m2, eps, fewer);
  MESSAGE("maglev: removing 1 of 10 moved " << mv * 100 << " % of keys");
  CHECK(mv == doctest::Approx(0.10).epsilon(0.5));
  auto weighted = endpoints(2, nullptr, {1, 3});
  Maglev mw(weighted);
  std::vector<int> ws(2, 0);
  for (auto e : mw.table()) ++ws[e];
  CHECK(ws[1] / 65537.0 == doctest::Approx(0.75).epsilon(0.02));
}

TEST_CASE("hashing policies without a key spread at random; retries walk to untried endpoints") {
  auto eps = endpoints(5);
  for (const char* name : {"ring_hash", "maglev"}) {
    auto p = make_policy(name, eps);
    Rng rng;
    auto h = histogram(*p, 5, 20000, rng);
    for (int c : h) CHECK(c > 2000);
    PickContext ctx;
    ctx.has_hash = true;
    ctx.hash = 42;
    int first = p->pick(ctx);
    ctx.exclude_mask = uint64_t{1} << first;
    int second = p->pick(ctx);
    CHECK(second != first);
  }
}

TEST_CASE("ewma: a slow endpoint loses its share; an idle one's estimate decays") {
  std::vector<LoadStats> loads(3);
  auto eps = endpoints(3, &loads);
  auto p = make_policy("ewma", eps);
  const int64_t now = 1'000'000'000'000;
  loads[0].observe(now, 1e6);    // 1 ms
  loads[1].observe(now, 1e6);
  loads[2].observe(now, 200e6);  // 200 ms: peak taken at once
  Rng rng;
  std::vector<int> h(3, 0);
  for (int k = 0; k < 30000; ++k) {
    PickContext ctx;
    ctx.random = rng.next();
    ctx.now_ns = now;
    ++h[static_cast<size_t>(p->pick(ctx))];
  }
  CHECK(h[2] == 0);  // it only wins against itself, which P2C never draws
  // Idle for 30 s (3 decay times): the 200 ms estimate has decayed to e^-3 of it, ~10 ms.
  CHECK(loads[2].cost(now + static_cast<int64_t>(30e9)) == doctest::Approx(200e6 * std::exp(-3.0)).epsilon(0.01));
  loads[2].observe(now + 1, 1e6);
  CHECK(loads[2].ewma_ns > 1e6);  // a fast sample lowers a peak gradually, not at once
}

TEST_CASE("every policy skips excluded endpoints when it can") {
  std::vector<LoadStats> loads(4);
  auto eps = endpoints(4, &loads);
  for (const char* name : {"round_robin", "least_request", "random", "ring_hash", "maglev", "ewma"}) {
    auto p = make_policy(name, eps);
    Rng rng;
    for (int k = 0; k < 200; ++k) {
      PickContext ctx;
      ctx.random = rng.next();
      ctx.exclude_mask = 0b1011;
      CHECK_MESSAGE(p->pick(ctx) == 2, std::string(name));
    }
  }
}

TEST_CASE("zone awareness: local while 70 % of the zone is up, spilling in proportion below") {
  using sy::lb::zone_local_share;
  using sy::lb::zone_spills;
  CHECK(zone_local_share(0, 4, 0, 2) == 0.0);  // nothing local
  CHECK(zone_local_share(4, 4, 4, 4) == 1.0);  // everything chosen is local
  CHECK(zone_local_share(2, 4, 2, 2) == 1.0);  // the whole zone up
  CHECK(zone_local_share(3, 5, 7, 10) == doctest::Approx(1.0));
  CHECK(zone_local_share(1, 5, 35, 100) == doctest::Approx(0.5));  // 35 % up: half stays
  // The spill follows the share over many requests.
  int spilled = 0;
  for (uint64_t r = 0; r < 100000; ++r) spilled += zone_spills(0.5, r);
  CHECK(spilled == doctest::Approx(50000).epsilon(0.02));
  CHECK_FALSE(zone_spills(1.0, 12345));
  for (uint64_t r = 0; r < 1000; ++r) CHECK(zone_spills(0.0, r));
}
