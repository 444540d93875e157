// Fixed-size read buffers handed out per loop. A connection holds one only while it has bytes in
// flight; an idle keep-alive connection gives it back, so 10,000 idle clients cost no buffers.
// Single-threaded: one pool per loop.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <vector>

namespace sy::net {

class BufferPool {
 public:
  static constexpr size_t kSize = 64 * 1024;
  ~BufferPool() {
    for (char* b : free_) std::free(b);
  }
  char* acquire() {
    if (!free_.empty()) {
      char* b = free_.back();
      free_.pop_back();
      return b;
    }
    return static_cast<char*>(std::malloc(kSize));
  }
  void release(char* b) {
    if (!b) return;
    if (free_.size() < kKeep) free_.push_back(b);
    else std::free(b);
  }

 private:
  static constexpr size_t kKeep = 256;  // bound on memory parked in the free list
  std::vector<char*> free_;
};

// A connection's read buffer: [start, end) holds bytes read but not yet consumed.
struct ReadBuffer {
  char* data = nullptr;
  size_t start = 0;
  size_t end = 0;

  size_t pending() const { return end - start; }
  size_t space() const { return BufferPool::kSize - end; }
  // Moves unconsumed bytes to the front so a read has room. Only when nothing refers into it.
  void compact() {
    if (start == 0) return;
    if (end > start) __builtin_memmove(data, data + start, end - start);
    end -= start;
    start = 0;
  }
};

}  // namespace sy::net
