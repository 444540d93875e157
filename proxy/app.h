// The only wiring: config → registry, routing snapshot, workers, listeners, admin API, signals,
// reload, lease expiry and persistence. Everything here runs on the main loop; with `workers: 1`
// the main loop also serves proxy traffic, with more the WorkerThreads do.
#pragma once

#include <uv.h>

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "health/health_checker.h"
#include "health/runtime.h"
#include "proxy/admin/admin_api.h"
#include "proxy/admin/metrics.h"
#include "proxy/net/listener.h"
#include "proxy/server/access_log.h"
#include "proxy/server/routing_table.h"
#include "proxy/server/worker.h"
#include "proxy/server/worker_thread.h"
#include "proxy/ratelimit/limiter.h"
#include "proxy/tls_state.h"
#include "registry/etcd/backend.h"
#include "registry/etcd/presence.h"
#include "registry/journal.h"
#include "registry/registry.h"

namespace sy {

class App {
 public:
  App(std::string config_path, conf::Config cfg);
  ~App();
  // Runs until SIGTERM/SIGINT and the drain that follows. Returns the exit code.
  int run();

 private:
  class Reporter;  // one per worker: metrics + that worker's access-log buffer
  static void on_inbox(uv_async_t* a);
  static void on_signal(uv_signal_t* s, int signum);
  static void on_tick(uv_timer_t* t);
  static void on_check(uv_check_t* c);
  static void on_journal_synced(uv_async_t* a);
  static void on_shutdown_timer(uv_timer_t* t);
  static void on_worker_drained(server::Worker* w);

  std::string start();
  std::string start_workers(int n);
  uint64_t connection_cap() const;
  std::string reload(std::string& summary_json);
  // reload() for SIGHUP and POST /v1/reload: its outcome kept for the dashboard and published.
  std::string reload_and_report(std::string& summary_json);
  // An event for the admin API's stream (GET /v1/events); nothing before the API exists.
  void event(const char* type, const std::string& message, const std::string& service = "");
  nlohmann::json dashboard_status();  // the dashboard's banners and registry status
  void publish();
  size_t open_connections() const;
  std::vector<conf::Address> own_addresses();
  void apply_admin_limits(const conf::Config& c);
  void ramp_slow_starts();
  void begin_shutdown();
  void finish_shutdown();
  void persist();
  int64_t now_ms() const { return static_cast<int64_t>(uv_now(loop_)); }
  // workers: 1 — the main loop serves proxy traffic through worker_ (set up by start_workers).
  bool main_is_worker() const { return worker_.table != nullptr; }

  std::string config_path_;
  std::shared_ptr<const conf::Config> cfg_;
  uv_loop_t* loop_;
  // Declared before everything that holds routing snapshots: an instance's runtime removes its
  // metric series when the last snapshot holding it goes.
  admin::Metrics metrics_;
  std::atomic<bool> metrics_on_{true};
  server::AccessLogFile access_log_;
  registry::Registry registry_;
  registry::Journal journal_;
  // The journal's sync thread wakes the loop here when a write is on disk (or failed); the answers
  // held for it are then sent. (ticket, AdminApi batch) in ticket order.
  uv_async_t journal_wake_{};
  std::deque<std::pair<uint64_t, uint64_t>> journal_batches_;
  void release_synced();
  server::RoutingTableSlot table_;
  server::RoutingBuilder routing_;  // main loop: what the next publish patches
  std::unique_ptr<admin::AdminApi> api_;
  // registry.backend: etcd — after api_, so it goes first (its callbacks answer through api_).
  std::unique_ptr<registry::etcd::Backend> backend_;
  std::unique_ptr<registry::etcd::Presence> presence_;  // with backend_: this proxy's key, the proxies counted
  net::BufferPool probe_buffers_;
  std::unique_ptr<health::Runtime> runtime_;
  std::unique_ptr<health::HealthChecker> checker_;
  std::vector<std::unique_ptr<Reporter>> reporters_;
  // workers: 1 — the main loop's own worker.
  server::Worker worker_;
  // workers > 1 — threads, and the way back from them.
  uv_async_t inbox_wake_{};
  std::unique_ptr<server::Inbox> inbox_;
  std::vector<std::unique_ptr<server::WorkerThread>> threads_;
  std::vector<conf::Address> proxy_addresses_;
  std::vector<conf::Address> local_ips_;  // interface addresses (own_addresses), port 0
  int64_t local_ips_read_ms_ = 0;
  std::unique_ptr<net::Listener> admin_listener_;
  std::unique_ptr<TlsState> tls_;
  std::shared_ptr<const ratelimit::Limiters> rate_limits_;  // the config's policies, kept across reloads
  void apply_rate_share();  // scope: global policies take 1/n (n: proxies present)
  void tls_changed();
  void apply_admin_tls();
  uv_signal_t sig_hup_{}, sig_term_{}, sig_int_{}, sig_usr1_{};
  uv_timer_t tick_{};
  uv_timer_t shutdown_timer_{};
  uv_check_t check_{};
  uv_idle_t held_idle_{};  // runs while admin answers are held for the end of the turn
  bool table_dirty_ = false;
  uint64_t publish_seq_ = 0;  // RoutingTable::seq
  int64_t last_ramp_ms_ = 0;
  unsigned ticks_ = 0;
  struct LastReload {
    bool happened = false;
    bool ok = true;
    int64_t time_ms = 0;  // wall clock
    std::string errors;
  } last_reload_;
  bool backend_was_up_ = true;
  bool stopping_ = false;
  bool finished_ = false;
  int exit_code_ = 0;
};

}  // namespace sy
