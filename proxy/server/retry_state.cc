// Retry decisions (see retry_state.h).
#include "proxy/server/retry_state.h"

#include <algorithm>

namespace sy::server {

bool may_retry(const conf::Retry& r, const FailedTry& t, bool budget_allows) {
  if (!t.named || t.shutting_down) return false;
  if (t.attempts_made >= r.attempts) return false;
  // Once bytes reached a backend, only a safe request whose whole body we kept may go again.
  if (t.head_sent && !(t.idempotent && t.request_done && t.body_replayable)) return false;
  // The budget bounds retries that add load; a connect failure multiplies nothing.
  if (!t.connect_failure && !budget_allows) return false;
  return true;
}

int64_t backoff_ms(const conf::Retry& r, uint32_t attempts_made, uint64_t random) {
  const uint32_t shift = std::min<uint32_t>(attempts_made > 0 ? attempts_made - 1 : 0, 20);
  const int64_t cap = std::min<int64_t>(r.backoff_max.count(), r.backoff_base.count() << shift);
  return cap > 0 ? static_cast<int64_t>(random % static_cast<uint64_t>(cap + 1)) : 0;
}

}  // namespace sy::server
