// Pick cost of every load-balancing policy with 10, 1,000 and 10,000 endpoints, and the cost of
// building its tables (which happens on membership changes, never per request).
//   build-release/tests/bench/lb_pick_bench
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "proxy/lb/load.h"
#include "proxy/lb/policy.h"

using namespace sy::lb;
using Clock = std::chrono::steady_clock;

int main() {
  const char* policies[] = {"round_robin", "least_request", "random", "ring_hash", "maglev", "ewma"};
  std::printf("| policy | endpoints | build | ns per pick |\n|---|---:|---:|---:|\n");
  for (size_t n : {size_t{10}, size_t{1000}, size_t{10000}}) {
    std::vector<LoadStats> loads(n);
    std::vector<EndpointInfo> eps;
    for (size_t i = 0; i < n; ++i) {
      loads[i].active = static_cast<uint32_t>(i % 7);
      loads[i].observe(1, 1e6 + static_cast<double>(i % 13) * 1e5);
      eps.push_back({static_cast<uint32_t>(1 + i % 3), "instance-" + std::to_string(i), &loads[i]});
    }
    for (const char* name : policies) {
      auto t0 = Clock::now();
      auto p = make_policy(name, eps);
      auto built = Clock::now() - t0;
      const int picks = 2'000'000;
      uint64_t r = 1, sink = 0;
      t0 = Clock::now();
      for (int k = 0; k < picks; ++k) {
        PickContext ctx;
        r = mix64(r + 0x9e3779b97f4a7c15ull);
        ctx.random = r;
        ctx.has_hash = true;
        ctx.hash = r * 31;
        ctx.now_ns = 2;
        sink += static_cast<uint64_t>(p->pick(ctx));
      }
      const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / picks;
      std::printf("| %s | %zu | %.2f ms | %.1f |\n", name, n,
                  std::chrono::duration<double, std::milli>(built).count(), ns + static_cast<double>(sink % 2) * 0);
    }
  }
  return 0;
}
