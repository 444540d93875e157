// Smooth weighted round robin, precomputed as one cycle.
#include "proxy/lb/round_robin.h"

#include <algorithm>
#include <numeric>
#include <queue>

namespace sy::lb {

RoundRobin::RoundRobin(const std::vector<uint32_t>& weights_in) : endpoints_(weights_in.size()) {
  if (weights_in.empty()) return;
  std::vector<uint64_t> w(weights_in.begin(), weights_in.end());
  uint64_t total = std::accumulate(w.begin(), w.end(), uint64_t{0});
  if (total > kMaxCycle) {
    // Keep proportions, every endpoint at least 1.
    double scale = static_cast<double>(kMaxCycle - w.size()) / static_cast<double>(total);
    for (auto& x : w) x = std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(x) * scale));
    total = std::accumulate(w.begin(), w.end(), uint64_t{0});
  }
  cycle_.reserve(total);
  // Equal weights: the smooth sequence is 0, 1, ..., n-1 (repeated w times, the same cycle).
  if (std::all_of(w.begin(), w.end(), [&](uint64_t x) { return x == w[0]; })) {
    for (size_t i = 0; i < w.size(); ++i) cycle_.push_back(static_cast<uint32_t>(i));
    return;
  }
  // The exact algorithm costs n per step. Past a budget (thousands of unequal weights), use the
  // same idea with a heap: each endpoint's k-th pick is due at (k + 1/2) / weight of the cycle,
  // picked earliest first — equally smooth, O(total · log n) to build.
  if (static_cast<double>(w.size()) * static_cast<double>(total) > (1 << 24)) {
    using Due = std::pair<double, uint32_t>;
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> heap;
    std::vector<uint64_t> picks(w.size(), 0);
    for (size_t i = 0; i < w.size(); ++i) heap.push({0.5 / static_cast<double>(w[i]), static_cast<uint32_t>(i)});
    while (cycle_.size() < total) {
      auto [due, i] = heap.top();
      heap.pop();
      cycle_.push_back(i);
      if (++picks[i] < w[i]) heap.push({(static_cast<double>(picks[i]) + 0.5) / static_cast<double>(w[i]), i});
    }
    return;
  }
  std::vector<int64_t> current(w.size(), 0);
  for (uint64_t step = 0; step < total; ++step) {
    size_t best = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      current[i] += static_cast<int64_t>(w[i]);
      if (current[i] > current[best]) best = i;
    }
    current[best] -= static_cast<int64_t>(total);
    cycle_.push_back(static_cast<uint32_t>(best));
  }
}

int RoundRobin::pick(const PickContext& ctx) const {
  if (uniform_) {
    if (endpoints_ == 0) return -1;
    const uint64_t start = cursor_.fetch_add(1, std::memory_order_relaxed);
    for (size_t k = 0; k < endpoints_; ++k) {
      const size_t e = static_cast<size_t>((start + k) % endpoints_);
      if (!ctx.excluded(e)) return static_cast<int>(e);
    }
    return static_cast<int>(start % endpoints_);  // all tried: reuse one
  }
  if (cycle_.empty()) return -1;
  uint64_t start = cursor_.fetch_add(1, std::memory_order_relaxed);
  uint64_t excluded = ctx.exclude_mask;
  if (excluded == 0) return static_cast<int>(cycle_[start % cycle_.size()]);
  // A retry: walk on from the cursor to the first endpoint not tried yet.
  for (size_t k = 0; k < cycle_.size(); ++k) {
    uint32_t e = cycle_[(start + k) % cycle_.size()];
    if (e >= 64 || !(excluded & (uint64_t{1} << e))) return static_cast<int>(e);
  }
  return static_cast<int>(cycle_[start % cycle_.size()]);  // all tried: reuse one
}


}  // namespace sy::lb
