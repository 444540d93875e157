// The circuit breaker state machine: closed, open, half-open, and what counts as a failure.
#include <doctest.h>

#include "health/circuit_breaker.h"

using namespace sy;
using health::CircuitBreaker;

TEST_CASE("closed → open after failure_threshold → half-open after open_for → closed on success") {
  conf::CircuitBreaker cfg;
  cfg.failure_threshold = 3;
  cfg.open_for = conf::Millis(1000);
  cfg.half_open_requests = 1;
  CircuitBreaker b(&cfg);
  CHECK(b.allow(0));
  CHECK_FALSE(b.on_failure(0));
  CHECK_FALSE(b.on_failure(0));
  CHECK(b.on_failure(10));  // third: opens
  CHECK(b.state(10) == CircuitBreaker::State::kOpen);
  CHECK_FALSE(b.allow(500));
  CHECK(b.state(1010) == CircuitBreaker::State::kHalfOpen);
  CHECK(b.allow(1010));        // the one trial
  CHECK_FALSE(b.allow(1011));  // no second concurrent trial
  CHECK(b.on_success());
  CHECK(b.state(1011) == CircuitBreaker::State::kClosed);
  CHECK(b.allow(1012));
}

TEST_CASE("a failed trial opens it again; a success resets the count") {
  conf::CircuitBreaker cfg;
  cfg.failure_threshold = 2;
  cfg.open_for = conf::Millis(100);
  CircuitBreaker b(&cfg);
  b.on_failure(0);
  b.on_success();
  CHECK_FALSE(b.on_failure(0));  // count was reset by the success
  CHECK(b.on_failure(0));
  CHECK(b.allow(100));
  CHECK(b.on_failure(100));
  CHECK(b.state(150) == CircuitBreaker::State::kOpen);
  CHECK(b.open_until_ms() == 200);
}

TEST_CASE("beyond the trials: only a half-open breaker takes a request past its limit, counted as a trial") {
  conf::CircuitBreaker cfg;
  cfg.failure_threshold = 1;
  cfg.open_for = conf::Millis(100);
  cfg.half_open_requests = 1;
  CircuitBreaker b(&cfg);
  CHECK_FALSE(b.allow_beyond_trials());  // closed: allow() is the way in
  CHECK(b.on_failure(0));
  CHECK_FALSE(b.allow_beyond_trials());  // open and open_for not over: refused
  CHECK(b.allow(100));                   // the trial
  CHECK_FALSE(b.allow(100));
  CHECK(b.allow_beyond_trials());        // every instance refusing: fail open
  // Both in flight: releasing one leaves the other's slot taken.
  b.release_trial();
  CHECK_FALSE(b.allow(101));
  b.release_trial();
  CHECK(b.allow(101));
  CHECK(b.on_success());
  CHECK_FALSE(b.allow_beyond_trials());
}
