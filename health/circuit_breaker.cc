// CircuitBreaker state machine.
#include "health/circuit_breaker.h"

namespace sy::health {

namespace {
const conf::CircuitBreaker& defaults() {
  static const conf::CircuitBreaker d;
  return d;
}
}  // namespace

const char* CircuitBreaker::name(State s) {
  switch (s) {
    case State::kClosed: return "closed";
    case State::kOpen: return "open";
    case State::kHalfOpen: return "half-open";
  }
  return "?";
}

CircuitBreaker::State CircuitBreaker::state(int64_t now_ms) const {
  if (state_ == State::kOpen && now_ms >= open_until_ms_) return State::kHalfOpen;
  return state_;
}

bool CircuitBreaker::allow(int64_t now_ms) {
  const auto& c = cfg_ ? *cfg_ : defaults();
  if (state_ == State::kOpen) {
    if (now_ms < open_until_ms_) return false;
    state_ = State::kHalfOpen;  // open_for has passed: let trials through
    trials_in_flight_ = 0;
  }
  if (state_ == State::kHalfOpen) {
    if (trials_in_flight_ >= c.half_open_requests) return false;
    ++trials_in_flight_;
  }
  return true;
}

bool CircuitBreaker::on_success() {
  failures_ = 0;
  if (state_ == State::kHalfOpen) {
    state_ = State::kClosed;
    trials_in_flight_ = 0;
    return true;
  }
  return false;
}

bool CircuitBreaker::on_failure(int64_t now_ms) {
  const auto& c = cfg_ ? *cfg_ : defaults();
  ++failures_;
  if (state_ == State::kHalfOpen || (state_ == State::kClosed && failures_ >= c.failure_threshold)) {
    state_ = State::kOpen;
    open_until_ms_ = now_ms + c.open_for.count();
    trials_in_flight_ = 0;
    return true;
  }
  return false;
}

}  // namespace sy::health
