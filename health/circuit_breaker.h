// Per-instance circuit breaker: closed → (failure_threshold consecutive failures) → open for
// `open_for` → half-open (up to `half_open_requests` trial requests) → closed on a success, open
// again on a failure. A pure state machine: time is passed in; no I/O.
//
// Threading: outcomes (on_success, on_failure, half_open_now, set_config) are applied by one thread,
// the main loop; allow() is called by every worker on the request path. So the state a worker reads
// is atomic: the closed fast path is one relaxed load, half-open trials are counted with one
// fetch_add, and the open → half-open step (when open_for has passed) is a compare-exchange.
#pragma once

#include <atomic>
#include <cstdint>

#include "conf/config.h"

namespace sy::health {

class CircuitBreaker {
 public:
  enum class State : uint8_t { kClosed, kOpen, kHalfOpen };

  explicit CircuitBreaker(const conf::CircuitBreaker* cfg = nullptr) { set_config(cfg); }
  // Copies the settings (nullptr: the defaults). The config object may go away afterwards.
  void set_config(const conf::CircuitBreaker* cfg);

  // May a new request go to this instance now? In half-open, each allowed request takes a trial
  // slot; the slots are given back when the breaker closes or opens again.
  bool allow(int64_t now_ms);
  // Every instance of the service refused (all half-open with their trials taken, or open): rather
  // than refuse the request, the proxy sends it to a half-open instance beyond its trial limit
  // (fail open, as panic routing does). Counts as a trial so its outcome is accounted the same way.
  // False when the breaker is not half-open (then it is open, or closed and allow() would say yes).
  bool allow_beyond_trials();
  // Outcome of a request that allow() let through. Returns true when the state changed.
  bool on_success();
  // A failure. When it would open the breaker, `may_open()` is asked first (the service-wide cap
  // on instances out of routing); refused, the breaker stays (or becomes) closed and the streak
  // starts over. Returns true when the breaker opened.
  template <typename MayOpen>
  bool on_failure(int64_t now_ms, MayOpen&& may_open) {
    ++failures_;
    const State s = state_.load(std::memory_order_acquire);
    if (!(s == State::kHalfOpen || (s == State::kClosed && failures_ >= failure_threshold_))) return false;
    if (!may_open()) {
      failures_ = 0;
      if (s == State::kHalfOpen) on_success();
      return false;
    }
    open(now_ms);
    return true;
  }
  bool on_failure(int64_t now_ms) {
    return on_failure(now_ms, [] { return true; });
  }
  // An attempt that was let through but not judged (the proxy's own limits): its half-open
  // trial slot is free again.
  void release_trial();

  State state(int64_t now_ms) const;
  // Active health checks vouch for the instance: stop waiting out open_for, take trials now.
  void half_open_now(int64_t now_ms) {
    if (state_.load(std::memory_order_acquire) == State::kOpen) open_until_ms_.store(now_ms, std::memory_order_release);
  }
  int64_t open_until_ms() const { return open_until_ms_.load(std::memory_order_acquire); }
  uint32_t consecutive_failures() const { return failures_; }
  static const char* name(State s);

 private:
  void open(int64_t now_ms);
  // Main-loop only.
  uint32_t failure_threshold_ = 5;
  int64_t open_for_ms_ = 30000;
  uint32_t failures_ = 0;
  // Read by workers.
  std::atomic<uint32_t> half_open_requests_{1};
  std::atomic<State> state_{State::kClosed};
  std::atomic<uint32_t> trials_in_flight_{0};
  std::atomic<int64_t> open_until_ms_{0};
};

}  // namespace sy::health
