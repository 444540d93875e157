// Fixed-size read buffers handed out per loop. A connection holds one only while it has bytes in
// flight; an idle keep-alive connection gives it back, so 10,000 idle clients cost no buffers.
//
// Buffers are mapped pages, not heap blocks: a buffer that only ever held a small request costs
// the pages it touched, and one given back to the kernel is gone from the RSS (heap blocks freed
// between live objects are not). The free list keeps what steady traffic reuses; trim(), called
// periodically, unmaps what a burst left behind: the buffers that sat unused since the last trim.
// Single-threaded: one pool per loop.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace sy::net {

class BufferPool {
 public:
  static constexpr size_t kSize = 64 * 1024;
  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool() {
    for (char* b : free_) unmap(b);
  }
  // A buffer, or nullptr when the kernel has no memory for one (the caller's read then fails).
  char* acquire() {
    if (!free_.empty()) {
      char* b = free_.back();
      free_.pop_back();
      low_ = std::min(low_, free_.size());
      return b;
    }
    low_ = 0;
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  void release(char* b) {
    if (!b) return;
    if (free_.size() < kKeep) free_.push_back(b);
    else unmap(b);
  }
  // Unmaps the buffers nobody took since the last call (keeping kFloor), so memory a burst needed
  // goes back to the kernel while what steady traffic cycles through stays.
  void trim() {
    size_t drop = std::min(low_, free_.size() > kFloor ? free_.size() - kFloor : 0);
    for (; drop > 0; --drop) {
      unmap(free_.back());
      free_.pop_back();
    }
    low_ = free_.size();
  }
  size_t parked() const { return free_.size(); }

 private:
  static void unmap(char* b) { munmap(b, kSize); }
  static constexpr size_t kKeep = 256;  // bound on memory parked in the free list
  static constexpr size_t kFloor = 8;   // kept through any trim
  std::vector<char*> free_;
  size_t low_ = 0;  // fewest buffers parked since the last trim()
};

// The calling thread's pool, for connections no worker owns (admin, etcd): one loop per thread.
inline BufferPool& thread_buffers() {
  thread_local BufferPool pool;
  return pool;
}

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
