// The only wiring: config → registry, routing snapshot, worker, listeners, admin API, signals,
// reload, lease expiry and persistence. Everything here runs on the main loop.
#pragma once

#include <uv.h>

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
#include "registry/registry.h"

namespace sy {

class App final : public server::ExchangeObserver {
 public:
  App(std::string config_path, conf::Config cfg);
  ~App() override;
  // Runs until SIGTERM/SIGINT and the drain that follows. Returns the exit code.
  int run();

  void on_exchange(const Record& r) override;
  void on_connections(int64_t delta) override;
  void on_upstream_response(health::InstanceRuntime* rt, std::string_view service, std::string_view instance,
                            int status) override;

 private:
  static void on_signal(uv_signal_t* s, int signum);
  static void on_tick(uv_timer_t* t);
  static void on_check(uv_check_t* c);
  static void on_shutdown_timer(uv_timer_t* t);
  static void on_worker_drained(server::Worker* w);

  std::string start();
  std::string reload(std::string& summary_json);
  void publish();
  void close_orphaned_pools();
  void ramp_slow_starts();
  void begin_shutdown();
  void finish_shutdown();
  int64_t now_ms() const { return static_cast<int64_t>(uv_now(loop_)); }

  std::string config_path_;
  std::shared_ptr<const conf::Config> cfg_;
  uv_loop_t* loop_;
  registry::Registry registry_;
  server::RoutingTableSlot table_;
  admin::Metrics metrics_;
  server::AccessLog access_log_;
  std::unique_ptr<admin::AdminApi> api_;
  server::Worker worker_;
  std::unique_ptr<health::Runtime> runtime_;
  std::unique_ptr<health::HealthChecker> checker_;
  std::vector<std::unique_ptr<net::Listener>> proxy_listeners_;
  std::unique_ptr<net::Listener> admin_listener_;
  uv_signal_t sig_hup_{}, sig_term_{}, sig_int_{}, sig_usr1_{};
  uv_timer_t tick_{};
  uv_timer_t shutdown_timer_{};
  uv_check_t check_{};
  bool table_dirty_ = false;
  bool persist_dirty_ = false;
  bool pools_dirty_ = false;
  int64_t last_ramp_ms_ = 0;
  bool stopping_ = false;
  bool finished_ = false;
  int exit_code_ = 0;
};

}  // namespace sy
