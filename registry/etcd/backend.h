// The shared registry (registry.backend: etcd): the local Registry kept in step with etcd, on the
// main loop.
//
// Model: one key per dynamic instance, {prefix}services/{service}/instances/{id}, whose value is
// the stored registration document (registry/codec.h), attached to an etcd lease of the
// instance's TTL. Deregistrations also write {prefix}deregistrations (the keys deleted by that
// transaction), so a watcher can tell a deregistration from a lease that ran out.
//
// Writes: a change made through this proxy's admin API is applied locally at once, then written
// (write()); its acknowledgement waits for etcd's answer. One batch is in flight at a time, the
// next one gathers meanwhile (group commit), so etcd sees each key's changes in order.
// Reads: a full range read, then a watch from its revision + 1; every change, this proxy's own
// included, comes back through the watch and reaches the routing snapshot as a local change does.
// A broken watch resumes from the last revision seen; a compacted one reads everything again.
// Availability: a linearizable probe every second; on failure the next member is tried, then
// the store is "down" (mutations 503, routing goes on), retried with backoff and jitter.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "conf/config.h"
#include "registry/etcd/client.h"
#include "proxy/net/random.h"
#include "registry/registry.h"

namespace sy::registry::etcd {

class Backend {
 public:
  struct Hooks {
    std::function<int64_t()> now_ms;                  // the loop's monotonic clock
    std::function<void(const std::string&)> info, warn;
    std::function<void(bool up)> on_up;               // switchyard_registry_backend_up
    std::function<void()> on_error;                   // switchyard_registry_backend_errors_total
    std::function<void(double seconds)> on_sync_lag;  // write (wall clock) to applied here
  };
  // `error` empty: committed. Else `unavailable` says whether etcd could not be reached (503
  // registry_unavailable) or refused the write itself (500).
  using Done = std::function<void(const std::string& error, bool unavailable)>;

  // `tls`: registry.etcd.tls (https:// endpoints), null for plain.
  Backend(uv_loop_t* loop, Registry& reg, const conf::EtcdConf& cfg, Hooks hooks,
          std::shared_ptr<const net::TlsClientConfig> tls = nullptr);
  ~Backend();  // closes its connections and timers (no callbacks after this)
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  void start();
  // Reachable with a quorum, as of the last probe or call.
  bool up() const { return up_; }
  // Has read the whole registry at least once (a proxy that has not routes nothing dynamic).
  bool synced() const { return synced_; }
  int64_t revision() const { return last_rev_; }
  // The etcd client (presence keys of rate limits with scope: global share it).
  Client& client() { return client_; }

  // Writes these instances as the local registry now has them (absent → deleted). `done("")`
  // once etcd has committed them, else done(why).
  void write(std::vector<std::pair<std::string, std::string>> keys, Done done);
  // Renews leases (one keepalive call for all of a turn's heartbeats); done(200 | 404 | 503).
  // Lease -1: known gone (404).
  void renew(std::vector<int64_t> leases, std::function<void(int status)> done);

 private:
  struct Op {
    std::string service, id;
    bool put = false;
    std::string value;
    int64_t ttl_s = 0;
    int64_t lease = 0;
  };
  struct Batch {
    uint64_t id = 0;
    std::vector<Op> ops;
    std::vector<Done> dones;
    int attempts = 0;
    size_t waiting = 0;
    std::string error;
    bool unavailable = false;  // the error said "not now / not here", not "no"
    int64_t revision = 0;
  };
  struct Deferred {  // a watch event for a key whose write is in flight
    int64_t revision;
    bool put;
    std::string value;
    int64_t lease;
    bool expired;
  };

  std::string key_of(const std::string& service, const std::string& id) const;
  bool parse_key(const std::string& key, std::string& service, std::string& id) const;

  void probe();
  void schedule_probe(uint64_t delay_ms);
  void probe_failed(const std::string& why);
  // Every few probes: the newest change under the prefix, by mod revision. Newer than anything the
  // watch delivered, twice in a row: the watch is stalled; it is opened again.
  void check_stall();
  void set_up(bool up, const std::string& why);

  void start_sync();
  void read_page(int64_t revision, std::string from, std::shared_ptr<std::map<std::pair<std::string, std::string>, std::pair<std::string, int64_t>>> seen);
  void start_watch();
  void on_watch_message(const nlohmann::json& result);
  void on_watch_end(const std::string& why);
  void apply_put(const std::string& service, const std::string& id, const std::string& value, int64_t lease, bool from_watch);
  void apply_delete(const std::string& service, const std::string& id, bool expired);

  void flush();
  // A lease of `ttl_s` granted moments ago, or 0. Taking one asks for a replacement, so
  // registrations wait for one Raft round (the put) instead of two (grant, then put).
  int64_t take_spare_lease(int64_t ttl_s);
  void grant_spare(int64_t ttl_s);
  void send_batch(Batch& b);
  void commit_batch(Batch& b);
  void finish_batch(Batch& b);

  uv_loop_t* loop_;
  Registry& reg_;
  conf::EtcdConf cfg_;
  Hooks hooks_;
  Client client_;
  // Heap-held: a timer's memory must outlive its close, which ends after this object is gone.
  uv_timer_t* probe_timer_ = nullptr;
  uv_timer_t* watch_timer_ = nullptr;  // restarts a broken watch after a pause
  bool up_ = false;
  bool ever_up_ = false;
  bool synced_ = false;
  bool syncing_ = false;
  bool resync_needed_ = false;
  bool probing_ = false;
  int probe_failures_ = 0;   // consecutive, for the backoff
  size_t probe_tries_ = 0;   // endpoints tried in this probe round
  int64_t last_rev_ = 0;     // last revision applied (events or a full read)
  int64_t stall_suspect_ = 0;  // the newest revision seen by the last stall check, if ahead of the watch
  unsigned probes_ = 0;
  uint64_t watch_generation_ = 0;
  net::Random rng_;  // probe and reconnect jitter

  // Batches with no key in common are in flight side by side (etcd commits them in one Raft round
  // when they arrive together); a batch touching a key still in flight waits for it, so etcd sees
  // each key's changes in the order they were made.
  std::set<std::pair<std::string, std::string>> pending_keys_;  // changed here, not yet sent
  std::vector<Done> pending_dones_;
  std::map<uint64_t, std::unique_ptr<Batch>> inflight_;
  uint64_t next_batch_ = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> inflight_keys_;  // → its batch
  std::map<std::pair<std::string, std::string>, Deferred> deferred_;
  struct Spare {
    int64_t lease;
    int64_t granted_ms;
  };
  std::map<int64_t, std::vector<Spare>> spares_;  // by TTL in seconds (a few TTLs at most)
};

}  // namespace sy::registry::etcd
