// Per-instance circuit breaker: closed → (failure_threshold consecutive failures) → open for
// `open_for` → half-open (up to `half_open_requests` trial requests) → closed on a success, open
// again on a failure. A pure state machine: time is passed in; no I/O.
#pragma once

#include <cstdint>

#include "conf/config.h"

namespace sy::health {

class CircuitBreaker {
 public:
  enum class State { kClosed, kOpen, kHalfOpen };

  explicit CircuitBreaker(const conf::CircuitBreaker* cfg = nullptr) : cfg_(cfg) {}
  void set_config(const conf::CircuitBreaker* cfg) { cfg_ = cfg; }

  // May a new request go to this instance now? In half-open, each allowed request takes a trial
  // slot, given back by on_success/on_failure.
  bool allow(int64_t now_ms);
  // Outcome of a request that allow() let through. Returns true when the state changed.
  bool on_success();
  bool on_failure(int64_t now_ms);

  State state(int64_t now_ms) const;
  // Active health checks vouch for the instance: stop waiting out open_for, take trials now.
  void half_open_now(int64_t now_ms) {
    if (state_ == State::kOpen) open_until_ms_ = now_ms;
  }
  int64_t open_until_ms() const { return open_until_ms_; }
  uint32_t consecutive_failures() const { return failures_; }
  static const char* name(State s);

 private:
  const conf::CircuitBreaker* cfg_;
  State state_ = State::kClosed;
  uint32_t failures_ = 0;
  uint32_t trials_in_flight_ = 0;
  int64_t open_until_ms_ = 0;
};

}  // namespace sy::health
