// App: wiring, signals, reload, shutdown.
#include "proxy/app.h"

#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "proxy/admin/admin_conn.h"
#include "proxy/net/assert.h"
#include "proxy/net/close.h"
#include "proxy/net/log.h"
#include "proxy/server/downstream_conn.h"
#include "registry/journal.h"
#include "version.h"

namespace sy {

namespace {
constexpr uint64_t kTickMs = 100;  // lease expiry, long-poll deadlines, access-log flush
}

App::App(std::string config_path, conf::Config cfg)
    : config_path_(std::move(config_path)), cfg_(std::make_shared<const conf::Config>(std::move(cfg))), loop_(uv_default_loop()) {}

App::~App() = default;

// What one worker reports after each exchange: metrics (shared, atomic) and its own access-log
// buffer. Runs on that worker's loop.
class App::Reporter final : public server::ExchangeObserver {
 public:
  Reporter(admin::Metrics& m, server::AccessLogFile& f, const std::atomic<bool>& on, int worker)
      : metrics_(m), log_(f), on_(on), accepted_(m.worker_connections(worker)) {}
  void on_exchange(const Record& r) override {
    if (on_.load(std::memory_order_relaxed)) metrics_.on_exchange(r);
    log_.append(r);
  }
  void on_connections(int64_t delta) override {
    metrics_.on_connections(delta);
    if (delta > 0) accepted_->Increment();
  }
  void on_upstream_response(health::InstanceRuntime* rt, std::string_view service, std::string_view instance,
                            int status) override {
    if (on_.load(std::memory_order_relaxed)) metrics_.on_upstream_response(rt, service, instance, status);
  }
  void flush() override { log_.flush(); }
  void on_upstream_tls_failure(std::string_view service, std::string_view instance, std::string_view reason,
                               const std::string& why) override {
    metrics_.on_upstream_tls_failure(service, instance, reason);
    log::warn("TLS to " + std::string(service) + "/" + std::string(instance) + " failed: " + why);
  }
  void on_h2_goaway(std::string_view reason) override { metrics_.on_h2_goaway(reason); }
  void on_h2_streams(int64_t delta) override { metrics_.on_h2_streams(delta); }
  void on_tls_handshake(const net::TlsServerConfig& l, const net::TlsSession& s, bool ok) override {
    admin::Metrics::on_tls_handshake(l.stats, s.version(), s.resumed(), ok);
    if (!ok && log::enabled(log::Level::kDebug)) log::debug("TLS handshake on " + l.label + " failed: " + s.error());
  }
  // Counted always; logged at most once a second per resource and worker, with the count since.
  void on_exhaustion(net::Resource r, std::string_view what) override {
    metrics_.on_exhaustion(r, what);
    Alarm& a = alarms_[static_cast<int>(r)];
    ++a.count;
    const uint64_t now_ms = uv_hrtime() / 1000000;
    if (a.last_ms != 0 && now_ms - a.last_ms < 1000) return;
    log::warn(std::string("resource exhaustion (") + net::resource_name(r) + "): " + std::string(what) + "; " +
              std::to_string(a.count) + (a.count == 1 ? " time" : " times") + " since the last report");
    a.count = 0;
    a.last_ms = now_ms;
  }

 private:
  struct Alarm {
    uint64_t count = 0;
    uint64_t last_ms = 0;
  };
  Alarm alarms_[net::kResourceKinds];
  admin::Metrics& metrics_;
  server::AccessLog log_;
  const std::atomic<bool>& on_;
  prometheus::Counter* accepted_;
};

namespace {
// Wall-clock milliseconds (Unix): event and reload times the dashboard shows.
int64_t unix_ms() {
  return static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}
}  // namespace

std::string App::start() {
  log::set_level(log::parse_level(cfg_->log_level));
  const auto& c = *cfg_;
  // (An admin API beyond loopback without a token is refused by the config loader itself, for
  // start-up, --check and every reload alike.)

  // The registry's, the health checker's and the runtime's sentences are logged and, once the
  // admin API is up, published on GET /v1/events (App::event).
  registry_.set_logger([this](const std::string& m) {
    log::info(m);
    event(m.find("mass expiry") != std::string::npos ? "self_preservation" : "registry", m);
  });
  registry_.set_probing(true);
  health::Runtime::Hooks rh;
  rh.now_ms = [this] { return now_ms(); };
  rh.log = [this](const std::string& m) {
    log::warn(m);
    event(m.rfind("circuit breaker", 0) == 0 ? "breaker" : "outlier", m);
  };
  rh.make_metrics = [this](health::InstanceMetrics& m, const std::string& s, const std::string& i) {
    metrics_.instance_metrics(m, s, i);
  };
  rh.service_stats = [this](const std::string& s) { return metrics_.service_stats(s); };
  runtime_ = std::make_unique<health::Runtime>(registry_, rh);
  health::HealthChecker::Hooks hh;
  hh.log = [this](const std::string& m) {
    log::info(m);
    event("health", m);
  };
  hh.on_probe = [this](const std::string& s, health::ProbeResult r) { metrics_.on_probe(s, r); };
  hh.on_healthy = [this](uint64_t uid) { runtime_->on_probed_healthy(uid); };
  checker_ = std::make_unique<health::HealthChecker>(loop_, probe_buffers_, registry_, hh);
  registry_.set_listener([this](const std::string* service) {
    table_dirty_ = true;
    if (api_) api_->on_registry_changed(service);
  });
  registry_.apply_config(c);
  if (c.registry.backend == conf::RegistryConf::Backend::kEtcd) registry_.set_shared(true);
  if (!c.registry.snapshot.empty()) {
    const uint64_t t0 = uv_hrtime();
    std::vector<std::string> notes;
    journal_.set_compact_bytes(c.registry.journal_max);
    uv_async_init(loop_, &journal_wake_, on_journal_synced);
    journal_wake_.data = this;
    journal_.set_on_synced([this] { uv_async_send(&journal_wake_); });
    std::string e = journal_.open(c.registry.snapshot, registry_, now_ms(), notes);
    if (!e.empty()) return e;
    for (const auto& n : notes) log::warn(n);
    log::info("registry snapshot loaded from " + c.registry.snapshot + " (" + std::to_string(registry_.total_instances()) +
              " instances, journal " + std::to_string(journal_.sequence()) + ", " +
              std::to_string((uv_hrtime() - t0) / 1000000) + " ms)");
  }
  registry_.take_persist_dirty();  // what was just loaded is on disk already
  // From here on, instances that become routable are stamped (slow start). Those present at start
  // are not: they all start together, so there is nothing to ramp against.
  registry_.set_clock([this] { return now_ms(); });
  TlsState::Hooks th;
  th.stats = [this](const std::string& label) -> const void* { return metrics_.tls_listener(label); };
  th.expiry = [this](const std::string& l, const std::string& n, int64_t t) { metrics_.set_certificate_expiry(l, n, t); };
  th.reload_failed = [this] { metrics_.on_tls_reload_failure(); };
  th.changed = [this] { tls_changed(); };
  tls_ = std::make_unique<TlsState>(loop_, th);
  {
    net::TlsProblems p;
    if (!tls_->load(cfg_, p)) {
      std::string all;
      for (const auto& e : p.errors) all += (all.empty() ? "" : "\n") + e;
      return all;
    }
  }
  apply_admin_tls();
  rate_limits_ = ratelimit::Limiters::update(nullptr, cfg_->rate_limits, static_cast<int64_t>(uv_hrtime() / 1000));
  publish();

  if (std::string e = access_log_.open(c.access_log); !e.empty()) return e;

  metrics_on_.store(c.metrics, std::memory_order_relaxed);
  const int workers = c.workers > 0 ? c.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (std::string e = start_workers(workers); !e.empty()) return e;

  admin::AdminHooks hooks;
  hooks.now_ms = [this] { return now_ms(); };
  hooks.reload = [this](std::string& summary) { return reload_and_report(summary); };
  // Not ready until the shared registry has been read once; after that, ready even while etcd is
  // away (static stability: the proxy routes on the registry it last saw).
  hooks.ready = [this] { return !stopping_ && (!backend_ || backend_->synced()); };
  hooks.registry_status = [this]() -> std::string {
    if (!backend_) return "embedded";
    if (!backend_->synced()) return "etcd: not read yet";
    return backend_->up() ? "etcd: up" : "etcd: unavailable (routing on the last registry seen; changes refused)";
  };
  if (c.registry.backend == conf::RegistryConf::Backend::kEtcd) {
    hooks.writable = [this] { return backend_ && backend_->up(); };
    hooks.renew = [this](std::vector<int64_t> leases, std::function<void(int)> done) { backend_->renew(std::move(leases), std::move(done)); };
  }
  hooks.own_addresses = [this] { return own_addresses(); };
  // Always batch: the changes of one loop turn are published (and journaled) once, whatever their
  // number, so a registration storm costs one routing rebuild per turn, not one per change.
  hooks.persistence_enabled = [] { return true; };
  // Held answers go out at the end of this loop turn (on_check): an idle handle keeps the loop
  // from blocking in poll first. Pipelined admin requests otherwise waited a tick (100 ms) each.
  uv_idle_init(loop_, &held_idle_);
  held_idle_.data = this;
  hooks.on_held = [this] { uv_idle_start(&held_idle_, [](uv_idle_t*) {}); };
  hooks.config = [this]() -> const conf::Config& { return *cfg_; };
  hooks.before_scrape = [this] {
    runtime_->export_gauges();
    metrics_.sync_rate_limits(rate_limits_.get());
  };
  hooks.rate_limits = [this] { return rate_limits_; };
  hooks.unix_ms = unix_ms;
  hooks.instance_runtime = [this](uint64_t uid, uint32_t& active) -> const health::InstanceMetrics* {
    auto rt = runtime_->instance(uid);  // (the runtime keeps it alive; main loop)
    if (!rt) return nullptr;
    active = rt->load.in_flight();
    return &rt->metrics;
  };
  hooks.status = [this] { return dashboard_status(); };
  hooks.before_ack = [this] {
    if (table_dirty_) publish();
  };
  api_ = std::make_unique<admin::AdminApi>(registry_, metrics_, hooks, c.admin.token);
  api_->set_read_token(c.admin.read_token);
  metrics_.sync_registry(registry_);
  if (c.registry.backend == conf::RegistryConf::Backend::kEtcd) {
    registry::etcd::Backend::Hooks bh;
    bh.now_ms = [this] { return now_ms(); };
    bh.info = [](const std::string& m) { log::info(m); };
    bh.warn = [](const std::string& m) { log::warn(m); };
    bh.on_up = [this](bool up) {
      metrics_.set_backend_up(up);
      if (up != backend_was_up_)
        event("registry_backend", up ? "shared registry: etcd reachable; changes accepted again" : "shared registry: etcd unreachable; routing on the last registry seen, changes refused");
      backend_was_up_ = up;
    };
    bh.on_error = [this] { metrics_.on_backend_error(); };
    bh.on_sync_lag = [this](double s) { metrics_.on_sync_lag(s); };
    backend_ = std::make_unique<registry::etcd::Backend>(loop_, registry_, c.registry.etcd, bh,
                                                         tls_->current() ? tls_->current()->etcd : nullptr);
    backend_->start();
    // Every proxy keeps a presence key; rate limits with scope: global take 1/n of their rate.
    char id[40];
    std::snprintf(id, sizeof id, "%d-%llx", static_cast<int>(getpid()), static_cast<unsigned long long>(uv_hrtime()));
    presence_ = std::make_unique<registry::etcd::Presence>(loop_, backend_->client(), c.registry.etcd.prefix, id,
                                                            [this](uint32_t n) {
                                                              log::info("shared registry: " + std::to_string(n) + " proxies present");
                                                              apply_rate_share();
                                                            });
    presence_->start();
    log::info("registry: shared, in etcd at " + c.registry.etcd.endpoints.front().text +
              (c.registry.etcd.endpoints.size() > 1 ? " (+" + std::to_string(c.registry.etcd.endpoints.size() - 1) + " more)" : "") +
              " under " + c.registry.etcd.prefix);
  }

  apply_admin_limits(c);
  admin_listener_ = std::make_unique<net::Listener>();
  std::string e = admin_listener_->open(loop_, c.admin.listen, false, [](void* ctx, uv_stream_t* s, int status) {
    if (status < 0) {
      log::warn(std::string("admin listener: accept failed: ") + uv_strerror(status));
      return;
    }
    admin::AdminConn::accept(s, static_cast<admin::AdminApi*>(ctx));
  }, api_.get());
  if (!e.empty()) return e;
  log::notice("listening admin=" + admin_listener_->bound().text);

  uv_signal_init(loop_, &sig_hup_);
  uv_signal_init(loop_, &sig_term_);
  uv_signal_init(loop_, &sig_int_);
  uv_signal_init(loop_, &sig_usr1_);
  sig_hup_.data = sig_term_.data = sig_int_.data = sig_usr1_.data = this;
  uv_signal_start(&sig_hup_, on_signal, SIGHUP);
  uv_signal_start(&sig_term_, on_signal, SIGTERM);
  uv_signal_start(&sig_int_, on_signal, SIGINT);
  uv_signal_start(&sig_usr1_, on_signal, SIGUSR1);
  std::signal(SIGPIPE, SIG_IGN);
  // A file-size limit (RLIMIT_FSIZE) makes a journal write fail with EFBIG, answered 503, instead
  // of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);

  uv_timer_init(loop_, &tick_);
  tick_.data = this;
  uv_timer_start(&tick_, on_tick, kTickMs, kTickMs);
  uv_timer_init(loop_, &shutdown_timer_);
  shutdown_timer_.data = this;
  uv_check_init(loop_, &check_);
  check_.data = this;
  uv_check_start(&check_, on_check);
  for (auto& t : threads_) t->start();
  log::notice(std::string("switchyard ") + SWITCHYARD_VERSION + " ready (config " + (config_path_.empty() ? "built-in defaults" : config_path_) + ")");
  return "";
}

// max_connections, or by default a safe share of the descriptors this process may open: each
// client connection may need an upstream one, and some are kept for the admin API, probes, logs
// and pooled connections (HAProxy sizes maxconn the same way). The soft limit is raised to the
// hard one first, as HAProxy does.
uint64_t App::connection_cap() const {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = std::min<rlim_t>(rl.rlim_max, 1 << 20);
    if (raised.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  if (cfg_->max_connections > 0) return cfg_->max_connections;
  const uint64_t fds = rl.rlim_cur == RLIM_INFINITY ? (1 << 20) : static_cast<uint64_t>(rl.rlim_cur);
  const uint64_t reserve = std::min<uint64_t>(100, fds / 4);
  return std::max<uint64_t>(1, (fds - reserve) / 2);
}

std::string App::start_workers(int n) {
  const auto& c = *cfg_;
  const uint64_t cap = connection_cap();
  const uint64_t share = std::max<uint64_t>(1, (cap + static_cast<uint64_t>(n) - 1) / static_cast<uint64_t>(n));
  log::info("max_connections " + std::to_string(cap) + (n > 1 ? " (" + std::to_string(share) + " per worker)" : ""));
  if (n == 1) {
    // The main loop is the worker: no threads, outcomes applied directly.
    reporters_.push_back(std::make_unique<Reporter>(metrics_, access_log_, metrics_on_, 0));
    worker_.loop = loop_;
    worker_.table = &table_;
    worker_.observer = reporters_.back().get();
    worker_.health = runtime_.get();
    worker_.app = this;
    worker_.on_drained = on_worker_drained;
    worker_.rng.mix(uv_hrtime());
    worker_.max_conns = share;
    for (const auto& addr : c.listen) {
      auto l = std::make_unique<net::Listener>();
      std::string e = l->open(loop_, addr, false, [](void* ctx, uv_stream_t* s, int status) {
        server::DownstreamConn::accept(*static_cast<server::Worker*>(ctx), s, status);
      }, &worker_);
      if (!e.empty()) return e;
      log::notice("listening proxy=" + l->bound().text);
      worker_.own_listeners.push_back(l->bound());
      worker_.listeners.push_back(std::move(l));
    }
    proxy_addresses_ = worker_.own_listeners;
    return "";
  }
  uv_async_init(loop_, &inbox_wake_, on_inbox);
  inbox_wake_.data = this;
  inbox_ = std::make_unique<server::Inbox>(&inbox_wake_);
  for (int i = 0; i < n; ++i) {
    reporters_.push_back(std::make_unique<Reporter>(metrics_, access_log_, metrics_on_, i));
    threads_.push_back(std::make_unique<server::WorkerThread>(i, table_, *reporters_.back(), *inbox_));
    threads_.back()->set_max_connections(share);
  }
  // Every worker listens on every address with SO_REUSEPORT; a port-0 address takes the port the
  // first worker was given, so all of them share it.
  for (const auto& addr : c.listen) {
    conf::Address target = addr, bound;
    for (auto& t : threads_) {
      if (std::string e = t->listen(target, bound); !e.empty()) return e;
      target = bound;
    }
    log::notice("listening proxy=" + bound.text);
    proxy_addresses_.push_back(bound);
  }
  log::info(std::to_string(n) + " workers (one event loop each, SO_REUSEPORT listeners)");
  return "";
}

// Every address a client could reach this process's listeners at: wildcard listeners (0.0.0.0,
// [::]) stand for each local interface address on their port. Interfaces are read at most once a
// second (registrations may come in thousands per second).
std::vector<conf::Address> App::own_addresses() {
  std::vector<conf::Address> listeners = proxy_addresses_;
  if (admin_listener_) listeners.push_back(admin_listener_->bound());
  const int64_t now = now_ms();
  if (local_ips_.empty() || now - local_ips_read_ms_ >= 1000) {
    local_ips_.clear();
    uv_interface_address_t* ifs = nullptr;
    int count = 0;
    if (uv_interface_addresses(&ifs, &count) == 0) {
      for (int i = 0; i < count; ++i) {
        conf::Address a;
        std::memcpy(&a.ss, &ifs[i].address, ifs[i].address.address4.sin_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
        local_ips_.push_back(a);
      }
      uv_free_interface_addresses(ifs, count);
    }
    local_ips_read_ms_ = now;
  }
  std::vector<conf::Address> out;
  for (const auto& l : listeners) {
    out.push_back(l);
    if (!l.is_unspecified()) continue;
    const bool v6 = l.ss.ss_family == AF_INET6;  // [::] also takes IPv4 (dual stack)
    for (conf::Address a : local_ips_) {
      if (!v6 && a.ss.ss_family != AF_INET) continue;
      if (a.ss.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a.ss)->sin6_port = htons(l.port());
      else reinterpret_cast<sockaddr_in*>(&a.ss)->sin_port = htons(l.port());
      a.text = conf::format_address(a.sa());
      out.push_back(a);
    }
  }
  return out;
}

// The admin listener takes the proxy's client limits (a slow admin client is as much a slowloris).
void App::apply_admin_limits(const conf::Config& c) {
  admin::AdminLimits l;
  l.header_timeout_ms = static_cast<uint64_t>(c.client.header_timeout.count());
  l.idle_timeout_ms = static_cast<uint64_t>(c.client.idle_timeout.count());
  l.body_timeout_ms = static_cast<uint64_t>(c.client.body_timeout.count());
  l.max_connections = c.admin.max_connections;
  admin::AdminConn::set_limits(l);
}

void App::on_inbox(uv_async_t* a) {
  auto* app = static_cast<App*>(a->data);
  if (app->runtime_) app->runtime_->record_all(app->inbox_->take());
  if (app->stopping_ && app->inbox_->drained_count() == app->threads_.size()) app->finish_shutdown();
}

size_t App::open_connections() const {
  size_t n = worker_.conn_count;
  for (const auto& t : threads_) n += t->connections();
  return n;
}

int App::run() {
  std::string e = start();
  if (!e.empty()) {
    log::error(e);
    return 1;
  }
  uv_run(loop_, UV_RUN_DEFAULT);
  // Close whatever is left so every handle's memory is released (and sanitizers see no leak).
  uv_walk(loop_, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) net::close_socket(h, nullptr);  // (uv_fileno fails for timers and the like)
  }, nullptr);
  uv_run(loop_, UV_RUN_DEFAULT);
  for (auto& r : reporters_) r->flush();
  log::info("stopped");
  return exit_code_;
}

void App::publish() {
  auto dirty = registry_.take_dirty();
  auto prev = table_.load();
  // Only the services that changed are looked at (the whole registry after a reload).
  if (runtime_) runtime_->sync(&dirty);
  if (checker_ && !stopping_) checker_->sync(&dirty);
  routing_.set_throttle(!stopping_);
  auto next = routing_.build(registry_, *cfg_, prev.get(), &dirty, runtime_.get(), now_ms());
  // Panic routing is loud: say when a service enters or leaves it.
  for (const auto& [name, ups] : next->services) {
    bool was = false;
    if (prev) {
      auto it = prev->services.find(name);
      was = it != prev->services.end() && it->second->panic;
    }
    if (ups->panic && !was) {
      log::warn("panic routing for service " + name + ": no instance is healthy; using all of them rather than refusing every request");
      event("panic", "panic routing: " + name + " has no healthy instance; using all of them", name);
    }
    if (!ups->panic && was) {
      log::info("service " + name + " has healthy instances again; panic routing over");
      event("panic", "panic routing over: " + name + " has healthy instances again", name);
    }
    if (ups->runtime) ups->runtime->panic = ups->panic;
  }
  next->config = cfg_;
  next->tls = tls_ ? tls_->current() : nullptr;
  next->rate_limits = rate_limits_;
  if (rate_limits_)
    for (auto& r : next->routes)
      if (!r.rate_limit.empty()) r.limiter = rate_limits_->find(r.rate_limit);
  if (checker_) checker_->set_tls(next->tls);
  next->seq = ++publish_seq_;
  if (runtime_) {
    auto log = std::make_shared<server::GoneLog>();
    log->seq = next->seq;
    log->uids = runtime_->take_gone_uids();
    if (prev && prev->gone && prev->gone->seq + 1 == next->seq && prev->gone->depth < server::GoneLog::kDepth) {
      log->prev = prev->gone;
      log->depth = prev->gone->depth + 1;
    }
    next->gone = std::move(log);
  }
  table_.store(std::move(next));
  table_dirty_ = false;
  // Workers switch now (not at their next request), so the old snapshot and departed instances'
  // runtimes and metric series go at once.
  if (main_is_worker()) worker_.snapshot();
  for (auto& t : threads_) t->notify_snapshot();
}

void App::ramp_slow_starts() {
  // Instances inside their slow_start window get a larger share each tick (at most every 500 ms
  // a rebuild of their service's routing; nothing for services without slow_start).
  const int64_t now = now_ms();
  if (now - last_ramp_ms_ < 500) return;
  last_ramp_ms_ = now;
  for (const auto& [name, svc] : registry_.services()) {
    const int64_t window = svc.cfg.slow_start.count();
    if (window <= 0) continue;
    for (const auto& [id, inst] : svc.instances) {
      if (now - inst.routable_since_ms < window + 500) {
        registry_.touch(name);
        table_dirty_ = true;
        break;
      }
    }
  }
}

void App::on_check(uv_check_t* c) {
  auto* app = static_cast<App*>(c->data);
  uv_idle_stop(&app->held_idle_);
  if (app->table_dirty_) app->publish();
  app->persist();
}

// The changes of this loop turn go to the journal (one write, one fdatasync), then the answers
// held for them are sent: an acknowledged change is on disk.
void App::persist() {
  // A big ring_hash / Maglev service waits for its table (RoutingBuilder::pending): the answers of
  // the changes made meanwhile wait with it, so what is acknowledged is routed.
  if (routing_.pending()) return;
  auto keys = registry_.take_persist_dirty();
  if (backend_) {
    // The shared registry: the turn's answers go out once etcd has committed the turn's changes.
    if (keys.empty() && (!api_ || !api_->has_unpersisted())) return;
    const uint64_t batch = api_ ? api_->take_held() : 0;
    if (keys.empty()) {
      api_->release_held(batch, 0, "", "");
      return;
    }
    backend_->write(std::move(keys), [this, batch](const std::string& err, bool unavailable) {
      if (!api_) return;
      if (err.empty()) api_->release_held(batch, 0, "", "");
      else if (unavailable) api_->release_held(batch, 503, "registry_unavailable", "the change was not written to the shared registry (etcd): " + err);
      else api_->release_held(batch, 500, "registry_write_failed", "etcd refused the change: " + err);
    });
    return;
  }
  if (journal_.is_open() && (!keys.empty() || journal_.has_failed_keys())) {
    // On the sync thread: the loop goes on serving; the answers wait for the disk (on_journal_synced).
    const uint64_t batch = api_ ? api_->take_held() : 0;
    journal_batches_.emplace_back(journal_.write_async(registry_, keys), batch);
  } else if (api_ && api_->has_unpersisted()) {
    // Nothing of this turn is persisted (a heartbeat, a health flip): routed is enough.
    api_->release_persisted();
  }
}

void App::on_journal_synced(uv_async_t* a) { static_cast<App*>(a->data)->release_synced(); }

void App::release_synced() {
  for (auto& [ticket, err] : journal_.take_synced()) {
    SY_ASSERT(!journal_batches_.empty() && journal_batches_.front().first == ticket);
    const uint64_t batch = journal_batches_.front().second;
    journal_batches_.pop_front();
    if (!err.empty()) log::error("registry changes not saved (answered 503; written again with the next change): " + err);
    if (!api_) continue;
    if (err.empty()) api_->release_held(batch, 0, "", "");
    else
      api_->release_held(batch, 503, "registry_write_failed",
                         "the change is applied in memory but could not be saved to disk: " + err + "; retry later");
  }
}

void App::on_tick(uv_timer_t* t) {
  auto* app = static_cast<App*>(t->data);
  app->journal_.maybe_compact(app->registry_.index(), [](const std::string& m) { log::info(m); });
  // Keys of a write that failed are written again, once a second (a disk that filled up may have
  // room again).
  if (app->journal_.has_failed_keys() && app->ticks_ % 10 == 0) app->persist();
  app->registry_.expire(app->now_ms());
  app->registry_.reap_critical(app->now_ms());
  app->runtime_->tick();
  app->ramp_slow_starts();
  app->api_->sweep(app->now_ms());
  app->api_->tick(app->now_ms());
  if (app->routing_.pending()) {
    app->publish();
    app->persist();  // now, not after the loop's next poll
  }
  if (app->main_is_worker()) {
    app->worker_.upkeep();
    app->worker_.observer->flush();
  }
  if (++app->ticks_ % 10 == 0) app->probe_buffers_.trim();
}

void App::on_signal(uv_signal_t* s, int signum) {
  auto* app = static_cast<App*>(s->data);
  if (signum == SIGHUP) {
    std::string summary;
    std::string e = app->reload_and_report(summary);
    if (!e.empty()) log::error("reload rejected, the old config keeps serving:\n" + e);
  } else if (signum == SIGUSR1) {
    std::string e = app->access_log_.reopen();
    if (!e.empty()) log::error(e);
    else log::info("access log reopened");
  } else {
    app->begin_shutdown();
  }
}

void App::event(const char* type, const std::string& message, const std::string& service) {
  if (api_) api_->publish_event(type, message, service);
}

std::string App::reload_and_report(std::string& summary) {
  std::string e = reload(summary);
  last_reload_ = {true, e.empty(), unix_ms(), e};
  if (e.empty()) event("reload", "config reloaded from " + (config_path_.empty() ? std::string("conf/switchyard.yaml") : config_path_));
  else event("reload", "reload refused (the old config keeps serving): " + e.substr(0, e.find('\n')));
  return e;
}

nlohmann::json App::dashboard_status() {
  nlohmann::json banners = nlohmann::json::array();
  size_t stale = 0;
  for (const auto& [name, svc] : registry_.services())
    for (const auto& [id, inst] : svc.instances) stale += inst.stale ? 1 : 0;
  if (stale > 0)
    banners.push_back({{"kind", "self_preservation"},
                       {"message", "self-preservation: " + std::to_string(stale) + " instances whose leases expired in a mass expiry are kept (stale) until they heartbeat again"}});
  if (backend_ && !backend_->up())
    banners.push_back({{"kind", "registry_backend"}, {"message", "the shared registry (etcd) cannot be reached: routing on the last registry seen; changes are refused"}});
  if (last_reload_.happened && !last_reload_.ok) {
    nlohmann::json errors = nlohmann::json::array();
    for (size_t at = 0; at < last_reload_.errors.size();) {
      const size_t nl = last_reload_.errors.find('\n', at);
      const std::string line = last_reload_.errors.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
      if (!line.empty()) errors.push_back(line);
      if (nl == std::string::npos) break;
      at = nl + 1;
    }
    banners.push_back({{"kind", "reload_refused"}, {"message", "the last reload was refused; the config before it keeps serving"},
                       {"errors", errors}, {"time_ms", last_reload_.time_ms}});
  }
  nlohmann::json registry = {{"backend", backend_ ? "etcd" : "embedded"}, {"status", backend_ ? (backend_->up() ? "up" : "unavailable") : "embedded"},
                             {"instances", registry_.total_instances()}};
  return {{"banners", banners}, {"registry", registry}, {"version", SWITCHYARD_VERSION}, {"stopping", stopping_}};
}

std::string App::reload(std::string& summary_json) {
  conf::Config next;
  std::vector<std::string> errors;
  const std::string path = config_path_.empty() ? "conf/switchyard.yaml" : config_path_;
  if (!conf::load_file(path, next, errors)) {
    std::string all;
    for (const auto& l : errors) all += l + "\n";
    return all;
  }
  std::vector<std::string> notes;
  const auto old_cfg = cfg_;  // keeps the old config alive while it is compared below
  const auto& old = *old_cfg;
  bool listen_same = old.listen.size() == next.listen.size();
  for (size_t i = 0; listen_same && i < old.listen.size(); ++i) listen_same = old.listen[i] == next.listen[i];
  if (!listen_same || !(old.admin.listen == next.admin.listen) || old.workers != next.workers)
    notes.push_back("listen, admin.listen and workers take effect at the next restart");
  if (old.registry.backend != next.registry.backend || !(old.registry.etcd.endpoints == next.registry.etcd.endpoints) ||
      old.registry.etcd.prefix != next.registry.etcd.prefix || old.registry.snapshot != next.registry.snapshot)
    notes.push_back("registry.backend, registry.etcd and registry.snapshot take effect at the next restart");
  size_t old_routes = old.routes.size();
  auto next_cfg = std::make_shared<const conf::Config>(std::move(next));
  // Certificates are read again on every reload; one that does not load refuses the reload (the
  // old config and certificates keep serving), as a config error does.
  net::TlsProblems tls;
  if (!tls_->load(next_cfg, tls)) {
    metrics_.on_tls_reload_failure();
    std::string all;
    for (const auto& l : tls.errors) all += l + "\n";
    return all;
  }
  for (const auto& w : tls.warnings) notes.push_back(w);
  cfg_ = std::move(next_cfg);
  apply_admin_tls();
  // Policies whose settings did not change keep their buckets (a reload refills nothing).
  rate_limits_ = ratelimit::Limiters::update(rate_limits_, cfg_->rate_limits, static_cast<int64_t>(uv_hrtime() / 1000));
  apply_rate_share();
  metrics_on_.store(cfg_->metrics, std::memory_order_relaxed);
  api_->set_token(cfg_->admin.token);
  api_->set_read_token(cfg_->admin.read_token);
  apply_admin_limits(*cfg_);
  log::set_level(log::parse_level(cfg_->log_level));
  if (cfg_->access_log != old.access_log) {
    if (std::string e = access_log_.open(cfg_->access_log); !e.empty()) notes.push_back(e);
  }
  auto changes = registry_.apply_config(*cfg_);
  publish();
  nlohmann::json j;
  j["reloaded"] = path;
  j["changes"] = changes;
  j["routes"] = {{"before", old_routes}, {"after", cfg_->routes.size()}};
  j["notes"] = notes;
  summary_json = j.dump(2) + "\n";
  log::info("config reloaded from " + path + ": " + std::to_string(changes.size()) + " changes");
  for (const auto& ch : changes) log::info("  " + ch);
  return "";
}

// Certificate files changed on disk and loaded: new handshakes use them from the next accept.
void App::tls_changed() {
  apply_admin_tls();
  publish();
}

void App::apply_admin_tls() {
  admin::AdminConn::set_tls(tls_->current() ? tls_->current()->admin : nullptr, [](const net::TlsServerConfig& l, const net::TlsSession& s, bool ok) {
    admin::Metrics::on_tls_handshake(l.stats, s.version(), s.resumed(), ok);
  });
}

void App::begin_shutdown() {
  if (stopping_) return;
  stopping_ = true;
  log::info("shutting down: no new connections; in-flight requests have up to " +
            std::to_string(cfg_->shutdown_timeout.count()) + " ms");
  uv_timer_start(&shutdown_timer_, on_shutdown_timer, static_cast<uint64_t>(cfg_->shutdown_timeout.count()), 0);
  // Each worker stops accepting; idle connections go now, busy ones after their exchange. The
  // main loop finishes when every worker has drained (on_worker_drained / on_inbox) or at the timeout.
  for (auto& t : threads_) t->begin_shutdown();
  if (main_is_worker()) worker_.begin_shutdown();
}

void App::on_worker_drained(server::Worker* w) {
  auto* app = static_cast<App*>(w->app);
  if (app->stopping_) app->finish_shutdown();
}

void App::on_shutdown_timer(uv_timer_t* t) {
  auto* app = static_cast<App*>(t->data);
  log::warn("shutdown_timeout reached with " + std::to_string(app->open_connections()) + " connections still open; closing them");
  app->finish_shutdown();
}

void App::finish_shutdown() {
  if (finished_) return;
  finished_ = true;
  uv_timer_stop(&shutdown_timer_);
  persist();
  journal_.close();  // finishes the queued writes and waits for a compaction under way
  release_synced();
  presence_.reset();  // uses backend_'s client
  backend_.reset();  // its connections and timers close before the loop's last walk
  metrics_.stop_removing();
  if (checker_) checker_->stop_all();
  if (main_is_worker()) worker_.close_all();
  for (auto& t : threads_) t->stop();  // closes its connections and joins
  admin::AdminConn::close_all();
  if (admin_listener_) admin_listener_->close();
  if (tls_) tls_->close();
  uv_stop(loop_);
}

void App::apply_rate_share() {
  if (!rate_limits_) return;
  const uint32_t n = presence_ ? presence_->count() : 1;
  for (const auto& [name, l] : rate_limits_->by_name)
    if (l->policy().global) l->set_share(n);
}

}  // namespace sy
