// Retry decisions (see retry_state.h).
#include "proxy/server/retry_state.h"

#include <algorithm>

#include "proxy/net/random.h"

namespace sy::server {

bool may_retry(const conf::Retry& r, const FailedTry& t, bool budget_allows) {
  if (!t.named || t.shutting_down || t.out_of_time) return false;
  if (t.attempts_made >= r.attempts) return false;
  // Once bytes reached a backend, only a safe request whose whole body we kept may go again (or a
  // gRPC call the operator said may, by naming its status).
  if (t.head_sent && !((t.idempotent || t.grpc_named) && t.request_done && t.body_replayable)) return false;
  // The budget bounds retries that add load; a connect failure multiplies nothing.
  if (!t.connect_failure && !budget_allows) return false;
  return true;
}

int64_t backoff_ms(const conf::Retry& r, uint32_t attempts_made, uint64_t random) {
  const uint64_t cap = net::backoff_ceiling(static_cast<uint64_t>(std::max<int64_t>(0, r.backoff_base.count())),
                                            static_cast<uint64_t>(std::max<int64_t>(0, r.backoff_max.count())), attempts_made);
  return static_cast<int64_t>(net::full_jitter(cap, random));
}

}  // namespace sy::server
