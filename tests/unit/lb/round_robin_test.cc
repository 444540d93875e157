// Smooth weighted round robin: nginx's sequence, exclusion of tried endpoints, large weights.
#include <doctest.h>

#include "proxy/lb/round_robin.h"

using namespace sy::lb;

TEST_CASE("smooth weighted round robin interleaves (nginx sequence)") {
  RoundRobin rr({5, 1, 1});
  std::string seq;
  PickContext ctx;
  for (int i = 0; i < 7; ++i) seq += static_cast<char>('a' + rr.pick(ctx));
  CHECK(seq == "aabacaa");
  for (int i = 0; i < 7; ++i) seq += static_cast<char>('a' + rr.pick(ctx));
  CHECK(seq == "aabacaaaabacaa");
}

TEST_CASE("equal weights alternate; empty set picks nothing") {
  RoundRobin rr({1, 1});
  PickContext ctx;
  CHECK(rr.pick(ctx) == 0);
  CHECK(rr.pick(ctx) == 1);
  CHECK(rr.pick(ctx) == 0);
  RoundRobin none({});
  CHECK(none.pick(ctx) == -1);
}

TEST_CASE("exclusion skips tried endpoints") {
  RoundRobin rr({1, 1, 1});
  PickContext ctx;
  ctx.exclude_mask = 0b011;
  for (int i = 0; i < 5; ++i) CHECK(rr.pick(ctx) == 2);
}

TEST_CASE("large total weights are scaled, proportions kept") {
  std::vector<uint32_t> w(100, 10000);
  w[0] = 1;
  RoundRobin rr(w);
  CHECK(rr.cycle().size() <= RoundRobin::kMaxCycle);
  size_t zeros = 0;
  for (auto e : rr.cycle()) zeros += e == 0;
  CHECK(zeros >= 1);
}

TEST_CASE("thousands of unequal weights build quickly and keep proportions") {
  std::vector<uint32_t> w(10000, 1);
  for (size_t i = 0; i < w.size(); i += 2) w[i] = 3;
  RoundRobin rr(w);
  REQUIRE(rr.cycle().size() == 20000);
  std::vector<int> count(w.size(), 0);
  for (auto e : rr.cycle()) ++count[e];
  for (size_t i = 0; i < w.size(); ++i) CHECK(count[i] == static_cast<int>(w[i]));
}
