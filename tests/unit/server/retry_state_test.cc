// Retry decisions: which failed tries go again, and the backoff between them.
#include <doctest.h>

#include "proxy/server/retry_state.h"

using sy::conf::Millis;
using sy::server::backoff_ms;
using sy::server::FailedTry;
using sy::server::may_retry;

namespace {
FailedTry named_get(uint32_t attempts) {
  FailedTry t;
  t.named = true;
  t.attempts_made = attempts;
  t.idempotent = true;
  t.request_done = true;
  t.body_replayable = true;
  return t;
}
}  // namespace

TEST_CASE("a named failure of a safe request is retried until the attempts run out") {
  sy::conf::Retry r;
  r.attempts = 3;
  CHECK(may_retry(r, named_get(1), true));
  CHECK(may_retry(r, named_get(2), true));
  CHECK_FALSE(may_retry(r, named_get(3), true));
  FailedTry unnamed = named_get(1);
  unnamed.named = false;
  CHECK_FALSE(may_retry(r, unnamed, true));
  FailedTry stopping = named_get(1);
  stopping.shutting_down = true;
  CHECK_FALSE(may_retry(r, stopping, true));
}

TEST_CASE("once bytes reached a backend only a safe, complete, kept request goes again") {
  sy::conf::Retry r;
  FailedTry t = named_get(1);
  t.head_sent = true;
  CHECK(may_retry(r, t, true));
  t.idempotent = false;  // POST
  CHECK_FALSE(may_retry(r, t, true));
  t.idempotent = true;
  t.body_replayable = false;  // a body too large to keep
  CHECK_FALSE(may_retry(r, t, true));
  t.body_replayable = true;
  t.request_done = false;  // the client is still sending
  CHECK_FALSE(may_retry(r, t, true));
  // Before any byte reached a backend, a POST may move to another instance.
  FailedTry post = named_get(1);
  post.idempotent = false;
  post.connect_failure = true;
  CHECK(may_retry(r, post, true));
}

TEST_CASE("the budget bounds retries that add load, not connect failures") {
  sy::conf::Retry r;
  FailedTry sent = named_get(1);
  sent.head_sent = true;
  CHECK_FALSE(may_retry(r, sent, false));
  FailedTry refused = named_get(1);
  refused.connect_failure = true;
  CHECK(may_retry(r, refused, false));
}

TEST_CASE("backoff is full jitter under a doubling cap") {
  sy::conf::Retry r;
  r.backoff_base = Millis(25);
  r.backoff_max = Millis(250);
  CHECK(backoff_ms(r, 1, 0) == 0);
  CHECK(backoff_ms(r, 1, 25) == 25);           // cap after the 1st try: 25 ms
  CHECK(backoff_ms(r, 1, 26) == 0);            // uniform in [0, 25]
  CHECK(backoff_ms(r, 2, 50) == 50);           // 2nd: 50
  CHECK(backoff_ms(r, 3, 100) == 100);         // 3rd: 100
  CHECK(backoff_ms(r, 5, 250) == 250);         // capped at backoff_max
  CHECK(backoff_ms(r, 5, 251) == 0);
  CHECK(backoff_ms(r, 60, ~uint64_t{0}) <= 250);  // no overflow for many tries
  r.backoff_base = Millis(0);
  CHECK(backoff_ms(r, 3, 12345) == 0);
}

TEST_CASE("a gRPC status named in retry.on lets a kept call go again whatever its method, within its deadline") {
  sy::conf::Retry r;
  FailedTry call = named_get(1);
  call.head_sent = true;
  call.idempotent = false;  // gRPC calls are POSTs
  CHECK_FALSE(may_retry(r, call, true));
  call.grpc_named = true;
  CHECK(may_retry(r, call, true));
  call.body_replayable = false;  // a message past the replay limit was not kept
  CHECK_FALSE(may_retry(r, call, true));
  call.body_replayable = true;
  call.out_of_time = true;  // the call's grpc-timeout has run out
  CHECK_FALSE(may_retry(r, call, true));
}
