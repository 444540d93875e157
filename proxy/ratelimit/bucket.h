// One token bucket as a GCRA ("generic cell rate algorithm", the virtual-scheduling form ATM and
// Redis' redis-cell use): the bucket is one number, the theoretical arrival time `tat` of the next
// request on a full-rate schedule. A request at `now` passes when tat − now ≤ (burst − 1)·T (T:
// one token's worth of time) and moves tat to max(tat, now) + T; a refused request changes
// nothing. From a full bucket at 0, exactly burst + ⌊rate·t⌋ requests pass by t.
//
// Time is kept in microseconds multiplied by the rate's tokens per unit, so T is the unit itself
// in microseconds (an integer for /s, /m and /h): no rounding ever accumulates. With at most
// 100,000 tokens per unit (conf::parse_rate) a 64-bit word lasts 2.9 years of the limiter's own
// clock (it starts at 0 when the limiter is made).
//
// Pure (the clock is an argument): unit-tested with injected times.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "conf/units.h"

namespace sy::ratelimit {

struct Verdict {
  bool pass = false;
  uint64_t remaining = 0;     // tokens left after this request
  uint64_t retry_after_us = 0;  // refused: time until the next token
  uint64_t reset_us = 0;      // time until the bucket is full again
};

class Gcra {
 public:
  Gcra(conf::Rate rate, uint64_t burst)
      : tokens_(static_cast<int64_t>(rate.tokens)), t_(static_cast<int64_t>(rate.per_us)),
        tau_(static_cast<int64_t>(burst - 1) * static_cast<int64_t>(rate.per_us)), burst_(burst) {}

  // One request at `now_us` (the limiter's clock) against the bucket `tat`.
  Verdict take(int64_t& tat, int64_t now_us) const {
    const int64_t now = now_us * tokens_;
    const int64_t t0 = std::max(tat, now);
    Verdict v;
    if (t0 - now > tau_) {
      v.retry_after_us = static_cast<uint64_t>((t0 - now - tau_ + tokens_ - 1) / tokens_);
      v.reset_us = static_cast<uint64_t>((t0 - now + tokens_ - 1) / tokens_);
      return v;
    }
    tat = t0 + t_;
    fill(v, tat, now);
    v.pass = true;
    return v;
  }

  // The same on an atomic bucket, lock-free (a compare-and-swap loop): the one-bucket policies.
  Verdict take(std::atomic<int64_t>& tat, int64_t now_us) const {
    int64_t old = tat.load(std::memory_order_relaxed);
    for (;;) {
      int64_t next = old;
      const Verdict v = take(next, now_us);
      if (!v.pass) return v;
      if (tat.compare_exchange_weak(old, next, std::memory_order_relaxed)) return v;
    }
  }

  // What the bucket holds at `now_us` without taking (the status call).
  uint64_t available(int64_t tat, int64_t now_us) const {
    const int64_t now = now_us * tokens_;
    const int64_t owed = std::max<int64_t>(0, tat - now);  // time the schedule is ahead
    return static_cast<uint64_t>(std::max<int64_t>(0, tau_ + t_ - owed) / t_);
  }

  uint64_t burst() const { return burst_; }

 private:
  void fill(Verdict& v, int64_t tat, int64_t now) const {
    const int64_t owed = tat - now;
    v.remaining = static_cast<uint64_t>(std::max<int64_t>(0, tau_ + t_ - owed) / t_);
    v.reset_us = static_cast<uint64_t>((owed + tokens_ - 1) / tokens_);
  }

  int64_t tokens_, t_, tau_;
  uint64_t burst_;
};

}  // namespace sy::ratelimit
