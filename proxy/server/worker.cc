// Worker: shutdown and pool upkeep shared by the main-loop worker and worker threads.
#include "proxy/server/worker.h"

#include <unordered_set>

#include "proxy/server/downstream_conn.h"

namespace sy::server {

void Worker::upkeep() {
  close_orphaned_pools();
  snapshot();
  if (reloaded_) {
    reloaded_ = false;
    config_reloaded();
  }
  if (++ticks_ % 10 == 0) {
    buffers.trim();
    exchanges.trim();
  }
}

void Worker::close_orphaned_pools() {
  // Idle connections to instances that left are never picked again. Only when a new snapshot
  // arrived and something is pooled (not per registration); from the snapshots' logs of departed
  // endpoints (the cost follows what changed), walking the snapshot only when this worker fell
  // further behind than the logs reach.
  if (pool.idle_count() == 0 && h2_pool.count() == 0) return;  // (what left meanwhile is still in the logs next time)
  const auto& t = snapshot();
  if (!t || t->seq == pools_checked_seq_) return;
  const uint64_t since = std::exchange(pools_checked_seq_, t->seq);
  std::unordered_set<uint64_t> gone;
  bool covered = false;
  uint64_t expected = t->seq;
  for (const GoneLog* l = t->gone.get(); l && l->seq == expected && t->seq != 0; l = l->prev.get(), --expected) {
    if (l->seq <= since) break;
    gone.insert(l->uids.begin(), l->uids.end());
    if (l->seq == since + 1) {
      covered = true;
      break;
    }
  }
  if (covered && since != 0) {
    if (!gone.empty()) {
      pool.close_if([&](uint64_t uid) { return gone.count(uid) > 0; });
      h2_pool.close_if([&](uint64_t uid) { return gone.count(uid) > 0; });
    }
    return;
  }
  std::unordered_set<uint64_t> alive;
  for (const auto& [name, ups] : t->services)
    for (size_t i = 0; i < ups->endpoints.size(); ++i) alive.insert(ups->endpoints[i]->uid);
  for (const auto& r : t->routes)
    if (r.upstreams)
      for (size_t i = 0; i < r.upstreams->endpoints.size(); ++i) alive.insert(r.upstreams->endpoints[i]->uid);
  pool.close_if([&](uint64_t uid) { return !alive.count(uid); });
  h2_pool.close_if([&](uint64_t uid) { return !alive.count(uid); });
}

void Worker::config_reloaded() {
  // Every connection once per reload: a reload is rare, and each connection holds the old config.
  for (DownstreamConn* c = conns; c; c = c->next) c->config_reloaded();
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
  h2_pool.close_all();
}

}  // namespace sy::server
