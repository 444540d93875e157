// One rate-limit policy's buckets, shared by every worker (the rate is the proxy's, never one
// per worker), and the set of policies a config names.
//
// Keys live in a table of kShards shards, each a spin lock and a KeyTable (key_table.h: an
// open-addressing index over an array of buckets in least-recently-used order) of at most
// ⌈max_keys / kShards⌉ keys: a key's shard is its hash's, so two workers contend only when their
// keys share a shard, and the lock is held for one lookup, one move to the front and the bucket's
// arithmetic (no allocation but a new key's, and none once the table is full: the evicted key's
// node is reused). A key pushed out is counted (`evictions`); if it comes back it starts with a
// full bucket, as in every LRU-bounded limiter (HAProxy's stick tables, Envoy's descriptors),
// hence the large default. A policy with `key: none` is one atomic bucket and takes no lock.
//
// Limiters outlive reloads: Limiters::update keeps the one of a policy whose settings did not
// change, so a SIGHUP does not refill every bucket.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "proxy/ratelimit/bucket.h"
#include "proxy/ratelimit/key_table.h"

namespace sy::ratelimit {

class Limiter {
 public:
  static constexpr size_t kShards = 16;
  // A key longer than this is kept as its 64-bit hash ("#" + 16 hex digits): a client sending
  // 60 KB header values must not make max_keys buckets cost gigabytes.
  static constexpr size_t kMaxKeyBytes = 128;

  // `now_us` of the clock this limiter counts from (its buckets' time 0).
  Limiter(const conf::RateLimit& policy, int64_t now_us);
  Limiter(const Limiter&) = delete;
  Limiter& operator=(const Limiter&) = delete;

  const conf::RateLimit& policy() const { return policy_; }
  // This policy's RateLimit-Policy entry, made once: "name";q=<burst>;w=<seconds to refill>.
  const std::string& policy_field() const { return policy_field_; }
  // The opening of this policy's RateLimit entry: "name";r= (the tokens left follow).
  const std::string& limit_field() const { return limit_field_; }
  // Both header lines as far as they are constant, for a request only this policy limits:
  // "RateLimit-Policy: <policy_field>\r\nRateLimit: <limit_field>".
  const std::string& sole_headers() const { return sole_headers_; }
  bool dry_run() const { return policy_.mode == conf::RateLimit::Mode::kDryRun; }

  // One request with `key` at `now_us` (same clock as the constructor's). Refusals are counted
  // here, in both modes; in dry_run the caller lets the request pass.
  Verdict take(std::string_view key, int64_t now_us);

  // scope: global — this proxy's share is 1/n of the rate and of the burst (n: proxies present).
  void set_share(uint32_t n) { share_.store(n < 1 ? 1 : n, std::memory_order_relaxed); }
  uint32_t share() const { return share_.load(std::memory_order_relaxed); }

  uint64_t keys() const { return keys_.load(std::memory_order_relaxed); }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t passed() const { return passed_.load(std::memory_order_relaxed); }

  // Up to `limit` recently used keys with their tokens now, every shard's most recent first (the
  // status call; takes each shard's lock in turn). With no more than `limit` keys, all of them.
  struct KeyState {
    std::string key;
    uint64_t available;
  };
  std::vector<KeyState> recent(size_t limit, int64_t now_us) const;

 private:
  // A cache line each: workers on different shards do not share one.
  struct alignas(64) Shard {
    mutable SpinLock mu;
    KeyTable table;
  };
  Verdict take_with(const Gcra& g, std::string_view key, int64_t t);

  conf::RateLimit policy_;
  std::string policy_field_, limit_field_, sole_headers_;
  Gcra gcra_;
  int64_t epoch_us_;
  size_t per_shard_;
  std::atomic<int64_t> single_{0};  // key: none
  std::atomic<uint32_t> share_{1};
  uint64_t seed_;  // hash_key's, random per limiter
  Shard shards_[kShards];
  std::atomic<uint64_t> keys_{0}, evictions_{0}, refused_{0}, passed_{0};
};

// The policies of one config, by name. Built on the main loop; read by every worker through the
// routing snapshot (RoutingTable::rate_limits).
struct Limiters {
  std::map<std::string, std::shared_ptr<Limiter>, std::less<>> by_name;

  Limiter* find(std::string_view name) const {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second.get();
  }
  // The set for `policies`, keeping the limiters of `prev` (may be null) whose policy is the same.
  static std::shared_ptr<const Limiters> update(const std::shared_ptr<const Limiters>& prev,
                                                const std::map<std::string, conf::RateLimit>& policies, int64_t now_us);
};

}  // namespace sy::ratelimit
