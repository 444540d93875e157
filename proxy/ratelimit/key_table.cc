#include "proxy/ratelimit/key_table.h"

#include <algorithm>
#include <cstring>

namespace sy::ratelimit {

namespace {

__extension__ typedef unsigned __int128 u128;

// The 128-bit product folded to 64 bits: every input bit reaches every output bit.
uint64_t fold(uint64_t a, uint64_t b) {
  const u128 r = static_cast<u128>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

uint64_t load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Equal bytes, `n` each: keys up to 16 bytes (an IPv4 address, most header values) in two loads
// per side instead of a call to memcmp (~25 instructions on every hit).
bool same_bytes(const char* x, const char* y, size_t n) {
  const auto* a = reinterpret_cast<const unsigned char*>(x);
  const auto* b = reinterpret_cast<const unsigned char*>(y);
  if (n >= 8 && n <= 16) return ((load64(a) ^ load64(b)) | (load64(a + n - 8) ^ load64(b + n - 8))) == 0;
  if (n >= 4 && n < 8) return ((load32(a) ^ load32(b)) | (load32(a + n - 4) ^ load32(b + n - 4))) == 0;
  return std::memcmp(a, b, n) == 0;
}

constexpr uint64_t kP0 = 0xa0761d6478bd642full, kP1 = 0xe7037ed1a0b428dbull, kP2 = 0x8ebc6af09c88c6e3ull;

}  // namespace

uint64_t hash_key(std::string_view key, uint64_t seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(key.data());
  size_t n = key.size();
  seed ^= kP0 ^ n;
  uint64_t a = 0, b = 0;
  if (n <= 16) {
    // Two words that may overlap cover any length from 4 to 16 without a loop.
    if (n >= 8) {
      a = load64(p);
      b = load64(p + n - 8);
    } else if (n >= 4) {
      a = load32(p);
      b = load32(p + n - 4);
    } else if (n > 0) {
      a = (uint64_t{p[0]} << 16) | (uint64_t{p[n >> 1]} << 8) | p[n - 1];
    }
  } else {
    for (; n > 16; n -= 16, p += 16) seed = fold(load64(p) ^ kP1, load64(p + 8) ^ seed);
    a = load64(p + n - 16);
    b = load64(p + n - 8);
  }
  return fold(kP1 ^ key.size(), fold(a ^ kP1, b ^ seed) ^ kP2);
}

int64_t* KeyTable::find_or_insert(std::string_view key, uint64_t hash, bool& evicted) {
  evicted = false;
  const uint32_t tag = tag_of(hash);
  if (!slots_.empty()) {
    for (size_t s = slot_of(hash);; s = (s + 1) & mask_) {
      const Slot sl = slots_[s];
      if (sl.node == kNil) break;
      if (sl.tag != tag) continue;
      Node& n = nodes_[sl.node];
      if (n.hash != hash || n.key.size() != key.size() || !same_bytes(n.key.data(), key.data(), key.size())) continue;
      if (sl.node != head_) {
        unlink(sl.node);
        push_front(sl.node);
      }
      return &n.tat;
    }
  }
  uint32_t i;
  if (nodes_.size() >= capacity_) {
    // Full: the least recently used key's node becomes this key's (its bucket is forgotten).
    i = tail_;
    index_erase(i);
    unlink(i);
    evicted = true;
    Node& n = nodes_[i];
    n.key.assign(key);
    n.hash = hash;
    n.tat = 0;
  } else {
    if ((nodes_.size() + 1) * 2 > slots_.size()) grow_index();
    i = static_cast<uint32_t>(nodes_.size());
    nodes_.push_back(Node{std::string(key), hash, 0, kNil, kNil});
  }
  push_front(i);
  index_insert(i);
  return &nodes_[i].tat;
}

void KeyTable::unlink(uint32_t i) {
  Node& n = nodes_[i];
  (n.prev == kNil ? head_ : nodes_[n.prev].next) = n.next;
  (n.next == kNil ? tail_ : nodes_[n.next].prev) = n.prev;
  n.prev = n.next = kNil;
}

void KeyTable::push_front(uint32_t i) {
  Node& n = nodes_[i];
  n.prev = kNil;
  n.next = head_;
  (head_ == kNil ? tail_ : nodes_[head_].prev) = i;
  head_ = i;
}

void KeyTable::index_insert(uint32_t node) {
  const uint64_t h = nodes_[node].hash;
  size_t s = slot_of(h);
  while (slots_[s].node != kNil) s = (s + 1) & mask_;
  slots_[s] = Slot{node, tag_of(h)};
}

void KeyTable::index_erase(uint32_t node) {
  size_t hole = slot_of(nodes_[node].hash);
  while (slots_[hole].node != node) hole = (hole + 1) & mask_;
  // Backward shift: an entry after the hole moves into it when the hole lies between the entry's
  // home slot and where it sits, so every probe run stays unbroken.
  for (size_t j = (hole + 1) & mask_; slots_[j].node != kNil; j = (j + 1) & mask_) {
    const size_t home = slot_of(nodes_[slots_[j].node].hash);
    if (((j - home) & mask_) >= ((j - hole) & mask_)) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = Slot{};
}

void KeyTable::grow_index() {
  // At most half full: a miss ends within a couple of slots on average.
  const size_t size = std::max<size_t>(16, slots_.size() * 2);
  slots_.assign(size, Slot{});
  mask_ = size - 1;
  for (uint32_t i = 0; i < nodes_.size(); ++i) index_insert(i);
}

}  // namespace sy::ratelimit
