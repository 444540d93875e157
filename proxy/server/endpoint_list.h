// The endpoints of one service in a routing snapshot, in chunks of 64 shared between snapshots, so
// that publishing a change to one instance of a service of 10,000 copies a few chunks and the
// chunk index (N / 64 pointers), not N endpoint pointers (and releasing the old snapshot releases
// as few). The main loop's RoutingBuilder writes its working lists; a published copy is never
// written again: the builder seals every chunk it hands out (seal()) and copies a sealed chunk
// before writing into it. Workers only read (operator[], size()).
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <vector>

namespace sy::server {

struct Endpoint;

class EndpointList {
 public:
  using Ptr = std::shared_ptr<const Endpoint>;
  static constexpr size_t kChunk = 64;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const Ptr& operator[](size_t i) const { return chunks_[i / kChunk]->items[i % kChunk]; }
  const Ptr& back() const { return (*this)[size_ - 1]; }

  // ---- the builder's side (main loop) ----
  void push_back(Ptr e) {
    if (size_ % kChunk == 0) {
      chunks_.push_back(std::make_shared<Chunk>());
      sealed_.push_back(false);
    }
    writable(size_ / kChunk).items[size_ % kChunk] = std::move(e);
    ++size_;
  }
  void set(size_t i, Ptr e) { writable(i / kChunk).items[i % kChunk] = std::move(e); }
  void pop_back() {
    --size_;
    if (size_ % kChunk == 0) {
      chunks_.pop_back();
      sealed_.pop_back();
    } else {
      writable(size_ / kChunk).items[size_ % kChunk].reset();
    }
  }
  void clear() {
    chunks_.clear();
    sealed_.clear();
    size_ = 0;
  }
  // A copy to publish: from now on the builder's list copies a chunk before writing into it.
  EndpointList published() {
    sealed_.assign(sealed_.size(), true);
    EndpointList out;
    out.chunks_ = chunks_;
    out.size_ = size_;
    return out;
  }

 private:
  struct Chunk {
    std::array<Ptr, kChunk> items;
  };
  Chunk& writable(size_t c) {
    if (sealed_[c]) {
      chunks_[c] = std::make_shared<Chunk>(*chunks_[c]);
      sealed_[c] = false;
    }
    return *chunks_[c];
  }
  std::vector<std::shared_ptr<Chunk>> chunks_;
  std::vector<bool> sealed_;  // the builder's own: chunks shared with a published copy
  size_t size_ = 0;
};

}  // namespace sy::server
