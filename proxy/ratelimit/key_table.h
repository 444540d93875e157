// One shard of a keyed limiter's buckets: an index from key to bucket and a least-recently-used
// order, at most `capacity` keys. Not thread-safe: the Limiter holds the shard's SpinLock around
// each call.
//
// Why not std::unordered_map + std::list (the first version): a hit cost a modulo by a prime, a
// walk of a node chain, and a list splice through three heap nodes, ~110 instructions of the
// ~270 a keyed request paid over `key: none` (tests/bench/rate_limit_cost.py). Here the buckets
// are one array of nodes linked by 32-bit indices (the LRU list), the index an open-addressing
// table of (node, hash tag) pairs probed linearly: a hit is a masked index, one tag compare, one
// key compare and four index writes. A key is evicted only to make room for a new one, so a node
// is reused in place and the array never shrinks or holds holes; deletion from the index shifts
// the probe run back (no tombstones, so lookups never slow down with churn).
//
// Memory per key: a node (key string with its 15-byte small-string buffer, hash, bucket, links:
// 56 bytes) plus two index slots (16 bytes) and the key's own bytes beyond 15 (IPv6 addresses).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sy::ratelimit {

// A spin lock for critical sections of a few dozen instructions (one lookup and a bucket's
// arithmetic): a pthread mutex costs ~55 instructions per lock/unlock pair, this one two atomic
// operations when uncontended. A waiter spins on a plain load (no cache-line ping-pong) and yields
// after a while, so a holder that was preempted gets the core back.
class SpinLock {
 public:
  void lock() {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      for (int spins = 0; locked_.load(std::memory_order_relaxed);) {
        if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        } else {
          std::this_thread::yield();
          spins = 0;
        }
      }
    }
  }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

// A seeded 64-bit hash of a key (a multiply-fold over 8-byte words, in the manner of wyhash):
// ~15 instructions for an IPv4 address where std::hash took ~50. The seed is the limiter's, drawn
// at random when it is made, so a client cannot precompute header values that pile into one shard
// or one probe run.
uint64_t hash_key(std::string_view key, uint64_t seed);

class KeyTable {
 public:
  // At most `capacity` keys (set before the first use; at least 1).
  void set_capacity(size_t capacity) { capacity_ = capacity < 1 ? 1 : capacity; }

  // The bucket of `key` (with its hash_key), made (tat 0: a full bucket) if new, and marked most
  // recently used. `evicted`: making it pushed the least recently used key out. The pointer is
  // valid until the next call.
  int64_t* find_or_insert(std::string_view key, uint64_t hash, bool& evicted);

  size_t size() const { return nodes_.size(); }
  // Keys from the most recently used, while `f(key, tat)` returns true.
  template <class F>
  void each_recent(F&& f) const {
    for (uint32_t i = head_; i != kNil; i = nodes_[i].next)
      if (!f(std::string_view(nodes_[i].key), nodes_[i].tat)) return;
  }

 private:
  static constexpr uint32_t kNil = UINT32_MAX;
  struct Node {
    std::string key;
    uint64_t hash = 0;
    int64_t tat = 0;
    uint32_t prev = kNil, next = kNil;
  };
  struct Slot {
    uint32_t node = kNil;  // kNil: empty
    uint32_t tag = 0;      // the hash's high half: most misses end here without touching the node
  };
  size_t slot_of(uint64_t hash) const { return static_cast<size_t>(hash >> 4) & mask_; }  // low bits chose the shard
  static uint32_t tag_of(uint64_t hash) { return static_cast<uint32_t>(hash >> 32); }
  void unlink(uint32_t i);
  void push_front(uint32_t i);
  void index_insert(uint32_t node);
  void index_erase(uint32_t node);
  void grow_index();

  size_t capacity_ = 1;
  std::vector<Node> nodes_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  uint32_t head_ = kNil, tail_ = kNil;
};

}  // namespace sy::ratelimit
