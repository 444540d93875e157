// Active health checks: one probe session per instance that has a health_check (its own, from a
// registration, or its service's), each with its own timer on the main loop. HTTP probes go
// through the project's UpstreamConn (the same client the proxy uses); TCP probes only connect;
// gRPC probes call grpc.health.v1.Health/Check as a stream of an H2Upstream (the proxy's HTTP/2
// client), on one connection per instance kept open between probes (as Envoy's gRPC checker).
// healthy_threshold passes make an instance healthy, unhealthy_threshold failures unhealthy;
// each change is written to the registry with its reason (which logs it and bumps the index).
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "conf/config.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/net/tls_config.h"
#include "proxy/upstream/h2_upstream.h"
#include "proxy/upstream/upstream_conn.h"
#include "proxy/net/random.h"
#include "registry/registry.h"

namespace sy::health {

enum class ProbeResult { kSuccess, kFailure, kTimeout };

class HealthChecker {
 public:
  struct Hooks {
    std::function<void(const std::string&)> log;
    std::function<void(const std::string& service, ProbeResult r)> on_probe;  // metrics
    std::function<void(uint64_t uid)> on_healthy;  // the instance became healthy
  };
  HealthChecker(uv_loop_t* loop, net::BufferPool& buffers, registry::Registry& reg, Hooks hooks);
  ~HealthChecker();

  // Starts sessions for instances that need probing and stops those that no longer do: of the
  // instances in `dirty` only (their services' when a service's check changed), or of all with
  // nullptr / dirty->all.
  void sync(const registry::Registry::Dirty* dirty = nullptr);
  void stop_all();
  // The TLS contexts in force: HTTP probes of a service with `tls` use its client context, with
  // SNI and the name checked = server_name, else health_check.host, else the instance's IP.
  void set_tls(std::shared_ptr<const net::TlsContexts> tls) { tls_ = std::move(tls); }
  size_t sessions() const { return sessions_.size(); }

 private:
  class Session;
  uv_loop_t* loop_;
  net::BufferPool& buffers_;
  registry::Registry& reg_;
  Hooks hooks_;
  std::shared_ptr<const net::TlsContexts> tls_;
  net::Random rng_;  // probe jitter
  // Brings one service's sessions in line with the registry (`svc` nullptr: the service is gone).
  void sync_service(const std::string& name, const registry::Service* svc);
  // One instance of a service whose check did not change: started, restarted or stopped.
  void sync_instance(const std::string& name, const registry::Service& svc, const std::string& id);
  // The session that probes `inst` with `hc`: the one of `old_uid` when nothing it probes by
  // changed, else a new one (the old stopped). Taken out of sessions_.
  Session* session_for(const registry::Instance& inst, const conf::HealthCheck& hc, uint64_t old_uid);
  std::unordered_map<uint64_t, Session*> sessions_;  // by instance uid
  // gRPC probes' HTTP/2 connections, one per instance kept open between probes (declared after
  // sessions_: a session's stop() retires its connection).
  upstream::H2Pool h2_pool_;
  std::unordered_map<std::string, std::unordered_map<std::string, uint64_t>> by_service_;  // id → session uid, per service
};

}  // namespace sy::health
