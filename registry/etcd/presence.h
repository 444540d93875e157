// This proxy's presence in the shared registry, and how many proxies are present: one key
// `<prefix>proxies/<id>` attached to a lease of its own (kTtlSeconds, renewed every kRenewMs), and
// a count of the keys under `<prefix>proxies/` every kCountMs. A proxy that dies stops renewing;
// etcd drops its key when the lease runs out, and the others count one fewer within
// kTtlSeconds + kCountMs. Used by rate limits with `scope: global`, which divide a policy's rate
// among the proxies present. Main loop only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "registry/etcd/client.h"

namespace sy::registry::etcd {

class Presence {
 public:
  static constexpr int64_t kTtlSeconds = 5;
  static constexpr uint64_t kRenewMs = 1500;
  static constexpr uint64_t kCountMs = 1000;

  // `on_count(n)`: the number of proxies present changed (n >= 1: this one counts itself).
  Presence(uv_loop_t* loop, Client& client, std::string prefix, std::string id, std::function<void(uint32_t)> on_count);
  ~Presence();
  Presence(const Presence&) = delete;
  Presence& operator=(const Presence&) = delete;

  void start();
  uint32_t count() const { return count_; }

 private:
  static void on_renew_timer(uv_timer_t* t);
  static void on_count_timer(uv_timer_t* t);
  void grant();
  void renew();
  void recount();

  Client& client_;
  std::string key_, range_;
  std::function<void(uint32_t)> on_count_;
  // Heap-held: freed by their close callbacks, which may run after this object is gone.
  uv_timer_t* renew_timer_;
  uv_timer_t* count_timer_;
  int64_t lease_ = 0;  // 0: none yet (granting)
  uint32_t count_ = 1;
  uint64_t generation_ = 0;  // callbacks of calls made before a re-grant are ignored
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace sy::registry::etcd
