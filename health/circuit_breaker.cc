// CircuitBreaker state machine.
#include "health/circuit_breaker.h"

namespace sy::health {

const char* CircuitBreaker::name(State s) {
  switch (s) {
    case State::kClosed: return "closed";
    case State::kOpen: return "open";
    case State::kHalfOpen: return "half-open";
  }
  return "?";
}

void CircuitBreaker::set_config(const conf::CircuitBreaker* cfg) {
  static const conf::CircuitBreaker defaults;
  const auto& c = cfg ? *cfg : defaults;
  failure_threshold_ = c.failure_threshold;
  open_for_ms_ = c.open_for.count();
  half_open_requests_.store(c.half_open_requests, std::memory_order_relaxed);
}

CircuitBreaker::State CircuitBreaker::state(int64_t now_ms) const {
  const State s = state_.load(std::memory_order_acquire);
  if (s == State::kOpen && now_ms >= open_until_ms_.load(std::memory_order_acquire)) return State::kHalfOpen;
  return s;
}

bool CircuitBreaker::allow(int64_t now_ms) {
  State s = state_.load(std::memory_order_acquire);
  if (s == State::kClosed) return true;
  if (s == State::kOpen) {
    if (now_ms < open_until_ms_.load(std::memory_order_acquire)) return false;
    // open_for has passed: let trials through. Whoever loses this race sees half-open anyway.
    // trials_in_flight_ was zeroed when the breaker opened.
    state_.compare_exchange_strong(s, State::kHalfOpen, std::memory_order_acq_rel);
    s = state_.load(std::memory_order_acquire);
    if (s == State::kClosed) return true;
    if (s == State::kOpen) return false;
  }
  // Half-open: take a trial slot if one is free.
  const uint32_t limit = half_open_requests_.load(std::memory_order_relaxed);
  if (trials_in_flight_.fetch_add(1, std::memory_order_acq_rel) >= limit) {
    trials_in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    return false;
  }
  return true;
}

bool CircuitBreaker::allow_beyond_trials() {
  if (state_.load(std::memory_order_acquire) != State::kHalfOpen) return false;
  trials_in_flight_.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

bool CircuitBreaker::on_success() {
  failures_ = 0;
  // Half-open: the trial worked. Open: only panic routing sends requests to an open breaker's
  // instance, and one that answers is working again. (Workers only ever move open → half-open,
  // and their compare-exchange fails once this store is seen.)
  if (state_.load(std::memory_order_acquire) == State::kClosed) return false;
  state_.store(State::kClosed, std::memory_order_release);
  trials_in_flight_.store(0, std::memory_order_release);
  return true;
}

void CircuitBreaker::open(int64_t now_ms) {
  // Zero the trials before the state says open: the worker that moves it to half-open later
  // must find no stale trials.
  trials_in_flight_.store(0, std::memory_order_release);
  open_until_ms_.store(now_ms + open_for_ms_, std::memory_order_release);
  state_.store(State::kOpen, std::memory_order_release);
}

void CircuitBreaker::release_trial() {
  if (state_.load(std::memory_order_acquire) != State::kHalfOpen) return;
  uint32_t n = trials_in_flight_.load(std::memory_order_acquire);
  while (n > 0 && !trials_in_flight_.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) {
  }
}

}  // namespace sy::health
