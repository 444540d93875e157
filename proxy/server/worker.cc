// Worker: shutdown and pool upkeep shared by the main-loop worker and worker threads.
#include "proxy/server/worker.h"

#include <unordered_set>

#include "proxy/server/downstream_conn.h"

namespace sy::server {

void Worker::upkeep() {
  close_orphaned_pools();
  if (++ticks_ % 10 == 0) {
    buffers.trim();
    exchanges.trim();
  }
}

void Worker::close_orphaned_pools() {
  // Idle connections to instances that left are never picked again. Walks the snapshot, so only
  // when a new one arrived and there is something pooled (not per registration).
  const uint64_t g = table->generation();
  if (g == pools_checked_gen_ || pool.idle_count() == 0) return;
  pools_checked_gen_ = g;
  const auto& t = snapshot();
  if (!t) return;
  std::unordered_set<uint64_t> alive;
  for (const auto& [name, ups] : t->services)
    for (const auto& e : ups->endpoints) alive.insert(e.uid);
  for (const auto& r : t->routes)
    if (r.upstreams)
      for (const auto& e : r.upstreams->endpoints) alive.insert(e.uid);
  pool.close_if([&](uint64_t uid) { return !alive.count(uid); });
}

void Worker::begin_shutdown() {
  if (shutting_down) return;
  shutting_down = true;
  paused_listeners.clear();
  for (auto& l : listeners) l->close();
  for (DownstreamConn* c = conns; c;) {
    DownstreamConn* next = c->next;
    c->shutdown();
    c = next;
  }
  if (conn_count == 0 && on_drained) on_drained(this);
}

void Worker::close_all() {
  shutting_down = true;
  paused_listeners.clear();
  for (auto& l : listeners) l->close();
  while (conns) conns->close_now();
  pool.close_all();
}

}  // namespace sy::server
