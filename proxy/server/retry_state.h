// When a failed try may go again, and after how long: pure decisions over conf::Retry and what the
// exchange knows about its request (Envoy keeps the same apart, in retry_state_impl). The request
// path owns the counters and slots; these functions only decide, so they are unit-tested alone.
#pragma once

#include <cstdint>

#include "conf/config.h"

namespace sy::server {

// What the exchange knows when a try fails.
struct FailedTry {
  bool named = false;            // retry.on names this failure (a status, connect-failure, reset, timeout)
  bool connect_failure = false;  // no byte reached any backend
  uint32_t attempts_made = 0;    // tries so far, this one included
  bool head_sent = false;        // the request head reached a backend
  bool idempotent = false;       // GET, HEAD, PUT, DELETE, OPTIONS, TRACE
  bool request_done = false;     // the whole request was read from the client
  bool body_replayable = false;  // no body, or a body small enough that we kept all of it
  bool shutting_down = false;
  // retry.on named a gRPC status (trailers-only UNAVAILABLE...): the operator says calls may go
  // again whatever their method (gRPC calls are POSTs), as Envoy's retry_grpc_on.
  bool grpc_named = false;
  bool out_of_time = false;      // a gRPC call's grpc-timeout has run out: nobody waits for a retry
};

// Whether the failed try may be retried. `budget_allows`: the service's retry budget and
// circuit_breaker.max_retries have room (asked only for retries that add load: once bytes reached a
// backend; a connect failure only moves the request to another instance).
bool may_retry(const conf::Retry& r, const FailedTry& t, bool budget_allows);

// Exponential backoff with full jitter: uniform in [0, min(backoff_max, backoff_base · 2^(n-1))]
// after the n-th try, `random` a uniformly distributed 64-bit number.
int64_t backoff_ms(const conf::Retry& r, uint32_t attempts_made, uint64_t random);

}  // namespace sy::server
