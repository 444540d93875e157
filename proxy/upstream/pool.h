// Idle keep-alive upstream connections of one loop, per instance (keyed by the instance's uid,
// which is never reused). take() is O(1): an intrusive list per instance.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "proxy/upstream/upstream_conn.h"

namespace sy::upstream {

class Pool {
 public:
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() { close_all(); }

  // An idle connection to instance `uid`, detached from the pool, or nullptr.
  UpstreamConn* take(uint64_t uid);
  void put(UpstreamConn* c);
  void remove(UpstreamConn* c);  // the connection closed while idle
  void close_all();
  // Closes idle connections of instances no longer in `alive` (called after registry changes).
  template <typename Pred>
  void close_if(Pred dead) {
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (dead(it->first)) {
        UpstreamConn* c = it->second;
        it = idle_.erase(it);
        while (c) {
          UpstreamConn* n = c->next;
          c->prev = c->next = nullptr;
          c->pool_ = nullptr;
          --count_;
          c->close();
          c = n;
        }
      } else {
        ++it;
      }
    }
  }
  size_t idle_count() const { return count_; }

 private:
  std::unordered_map<uint64_t, UpstreamConn*> idle_;
  size_t count_ = 0;
};

}  // namespace sy::upstream
