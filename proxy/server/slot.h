// One unit of a shared limit counter, held while an exchange uses it (Envoy's ResourceAutoIncDec):
// take() adds one, release() or the destructor gives it back, and never twice. The request path
// holds its request, pending and retry slots this way instead of flags and hand-written decrements.
#pragma once

#include <atomic>
#include <cstdint>

#include "proxy/net/assert.h"

namespace sy::server {

class Slot {
 public:
  Slot() = default;
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() { release(); }

  void take(std::atomic<uint32_t>& counter) {
    release();
    counter_ = &counter;
    ++*counter_;
  }
  void release() {
    if (!counter_) return;
    SY_ASSERT(counter_->load() > 0);  // every slot given back was taken
    --*counter_;
    counter_ = nullptr;
  }
  bool held() const { return counter_ != nullptr; }

 private:
  std::atomic<uint32_t>* counter_ = nullptr;
};

}  // namespace sy::server
