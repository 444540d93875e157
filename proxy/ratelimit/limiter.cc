#include "proxy/ratelimit/limiter.h"

#include <algorithm>
#include <random>

namespace sy::ratelimit {

Limiter::Limiter(const conf::RateLimit& policy, int64_t now_us)
    : policy_(policy), gcra_(policy.rate, policy.burst), epoch_us_(now_us),
      per_shard_(std::max<size_t>(1, (policy.max_keys + kShards - 1) / kShards)) {
  std::random_device rd;
  seed_ = (uint64_t{rd()} << 32) ^ rd();
  for (Shard& s : shards_) s.table.set_capacity(per_shard_);
  const uint64_t refill_us = policy.burst * policy.rate.per_us / policy.rate.tokens;
  policy_field_ = "\"" + policy.name + "\";q=" + std::to_string(policy.burst) + ";w=" +
                  std::to_string(std::max<uint64_t>(1, (refill_us + 999999) / 1000000));
  limit_field_ = "\"" + policy.name + "\";r=";
  sole_headers_ = "RateLimit-Policy: " + policy_field_ + "\r\nRateLimit: " + limit_field_;
}

Verdict Limiter::take(std::string_view key, int64_t now_us) {
  const int64_t t = now_us - epoch_us_;
  // A share of 1/n: the same tokens over n times the unit, a burst of ⌊burst/n⌋ (at least 1).
  // Buckets keep their time-ahead across a change of n, so a share that grows is felt as refill.
  const uint32_t n = share_.load(std::memory_order_relaxed);
  Verdict v;
  if (n == 1) {
    v = take_with(gcra_, key, t);
  } else {
    conf::Rate r = policy_.rate;
    r.per_us *= n;
    v = take_with(Gcra(r, std::max<uint64_t>(1, policy_.burst / n)), key, t);
  }
  (v.pass ? passed_ : refused_).fetch_add(1, std::memory_order_relaxed);
  return v;
}

Verdict Limiter::take_with(const Gcra& g, std::string_view key, int64_t t) {
  if (policy_.key == conf::RateLimit::Key::kNone) return g.take(single_, t);
  char hashed[17];
  uint64_t h = hash_key(key, seed_);
  if (key.size() > kMaxKeyBytes) {
    static constexpr char kHex[] = "0123456789abcdef";
    hashed[0] = '#';
    for (int i = 16; i >= 1; --i, h >>= 4) hashed[i] = kHex[h & 15];
    key = std::string_view(hashed, sizeof hashed);
    h = hash_key(key, seed_);
  }
  Shard& s = shards_[h % kShards];
  bool evicted;
  std::lock_guard<SpinLock> lock(s.mu);
  const size_t before = s.table.size();
  int64_t* tat = s.table.find_or_insert(key, h, evicted);
  if (evicted) evictions_.fetch_add(1, std::memory_order_relaxed);
  if (s.table.size() != before) keys_.fetch_add(1, std::memory_order_relaxed);
  return g.take(*tat, t);
}

std::vector<Limiter::KeyState> Limiter::recent(size_t limit, int64_t now_us) const {
  const int64_t t = now_us - epoch_us_;
  std::vector<KeyState> out;
  if (policy_.key == conf::RateLimit::Key::kNone) {
    out.push_back({"", gcra_.available(single_.load(std::memory_order_relaxed), t)});
    return out;
  }
  // Shards keep no recency between them: take up to `limit` from each, then interleave them by
  // rank (every shard's most recent first), so a short listing never leaves out a key only because
  // it shares a shard with another (a listing of 10 from 2 keys shows both).
  std::vector<std::vector<KeyState>> per(kShards);
  size_t total = 0;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard<SpinLock> lock(shards_[i].mu);
    shards_[i].table.each_recent([&](std::string_view key, int64_t tat) {
      if (per[i].size() >= limit) return false;
      per[i].push_back({std::string(key), gcra_.available(tat, t)});
      return true;
    });
    total += per[i].size();
  }
  out.reserve(std::min(limit, total));
  for (size_t rank = 0; out.size() < limit && out.size() < total; ++rank)
    for (size_t i = 0; i < kShards && out.size() < limit; ++i)
      if (rank < per[i].size()) out.push_back(std::move(per[i][rank]));
  return out;
}

std::shared_ptr<const Limiters> Limiters::update(const std::shared_ptr<const Limiters>& prev,
                                                 const std::map<std::string, conf::RateLimit>& policies, int64_t now_us) {
  auto next = std::make_shared<Limiters>();
  for (const auto& [name, p] : policies) {
    std::shared_ptr<Limiter> keep;
    if (prev) {
      auto it = prev->by_name.find(name);
      // Positions aside (an edit elsewhere in the file moves them), the same policy keeps its buckets.
      if (it != prev->by_name.end()) {
        conf::RateLimit a = it->second->policy(), b = p;
        a.pos = b.pos = {};
        if (a == b) keep = it->second;
      }
    }
    next->by_name[name] = keep ? keep : std::make_shared<Limiter>(p, now_us);
  }
  return next;
}

}  // namespace sy::ratelimit
