// HealthChecker and its probe sessions.
#include "health/health_checker.h"

#include "proxy/http/grpc.h"
#include "proxy/net/resource.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

namespace sy::health {

// One instance's probing. Owns a timer; a probe in flight owns one UpstreamConn. Freed from the
// timer's close callback, never inside its own callbacks.
class HealthChecker::Session final : public upstream::UpstreamOwner {
 public:
  Session(HealthChecker& hc, const registry::Instance& inst, const conf::HealthCheck& cfg)
      : hc_(hc), uid_(inst.uid), service_(inst.service), id_(inst.id), address_(inst.address), tls_(inst.tls),
        protocol_(inst.protocol), cfg_(cfg) {
    uv_timer_init(hc.loop_, &timer_);
    timer_.data = this;
    uv_timer_start(&timer_, on_timer, 0, 0);  // first probe at once
  }

  const conf::HealthCheck& config() const { return cfg_; }

  void stop() {
    stopped_ = true;
    end_probe();
    if (cfg_.type == conf::HealthCheck::Type::kGrpc) hc_.h2_pool_.retire(uid_);
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) { delete static_cast<Session*>(h->data); });
  }

 private:
  static void on_timer(uv_timer_t* t) {
    auto* s = static_cast<Session*>(t->data);
    if (s->probing_) s->done(ProbeResult::kTimeout, "no answer within " + std::to_string(s->cfg_.timeout.count()) + " ms");
    else s->start_probe();
  }

  void start_probe() {
    probing_ = true;
    probe_started_ms_ = uv_now(hc_.loop_);
    int err = 0;
    if (cfg_.type == conf::HealthCheck::Type::kGrpc) {
      start_grpc_probe();
      return;
    }
    upstream::TlsTarget tls;
    if (cfg_.type == conf::HealthCheck::Type::kHttp && !tls_target(tls)) return;
    conn_ = upstream::UpstreamConn::connect(hc_.loop_, hc_.buffers_, address_, uid_, cfg_.timeout, this, nullptr, &err,
                                            tls.cfg ? &tls : nullptr);
    if (!conn_) {
      not_started(err);
      return;
    }
    uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(cfg_.timeout.count()), 0);
  }

  // TLS as requests reach the instance: the service's tls, or the default one for an instance
  // registered over TLS or spoken to as h2 (the service's config as now: a reload may change it).
  // False: TLS is wanted and no context is loaded; the probe failed.
  bool tls_target(upstream::TlsTarget& tls) {
    auto svc = hc_.reg_.services().find(service_);
    const bool known = svc != hc_.reg_.services().end();
    const bool service_tls = known && svc->second.cfg.tls.enabled;
    const conf::UpstreamProtocol proto = protocol_ ? *protocol_ : known ? svc->second.cfg.protocol : conf::UpstreamProtocol::kHttp1;
    const bool instance_tls = tls_ || proto == conf::UpstreamProtocol::kH2;
    if (!service_tls && !instance_tls) return true;
    if (hc_.tls_) tls.cfg = hc_.tls_->for_instance(service_, service_tls, instance_tls);
    if (!tls.cfg) {
      done(ProbeResult::kFailure, "the instance is reached over TLS and no TLS context is loaded for service '" + service_ + "'");
      return false;
    }
    tls.name = !tls.cfg->server_name.empty() ? tls.cfg->server_name : !cfg_.host.empty() ? cfg_.host : address_.host();
    return true;
  }

  // The probe's connection could not even be started (libuv's `err`).
  void not_started(int err) {
    net::Resource r;
    if (net::is_exhaustion(err, r)) {
      // The proxy is short of descriptors or memory: this round says nothing of the instance.
      probing_ = false;
      uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(cfg_.interval.count()), 0);
      return;
    }
    done(ProbeResult::kFailure, std::string("cannot start a connection: ") + uv_strerror(err));
  }

  // A stream on the instance's kept connection (a new one when there is none, or it closed).
  void start_grpc_probe() {
    upstream::TlsTarget tls;
    if (!tls_target(tls)) return;
    upstream::H2Upstream* c = hc_.h2_pool_.find(uid_, tls.cfg.get(), tls.name);
    if (!c) {
      int err = 0;
      c = upstream::H2Upstream::connect(hc_.loop_, hc_.buffers_, address_, uid_, cfg_.timeout, upstream::H2Windows{}, nullptr, &err,
                                        tls.cfg ? &tls : nullptr);
      if (!c) {
        not_started(err);
        return;
      }
      hc_.h2_pool_.add(c);
    }
    const bool ready = c->ready();
    x_ = c->open(this);
    uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(cfg_.timeout.count()), 0);
    if (ready) send_grpc_probe();  // (else on_upstream_connected)
  }

  void send_grpc_probe() {
    http::MessageHead req;
    req.http_major = 2;
    const std::string& authority = cfg_.host.empty() ? address_.text : cfg_.host;
    auto field = [&req](std::string_view n, std::string_view v) {
      req.add_field(n.data(), n.size());
      req.add_value(v.data(), v.size());
    };
    field("host", authority);
    field("content-type", "application/grpc");
    field("te", "trailers");
    field("user-agent", "switchyard-health-check");
    body_.clear();
    http::build_health_request(cfg_.grpc_service, body_);
    http::RequestForward f;
    f.method = "POST";
    f.target = "/grpc.health.v1.Health/Check";
    f.client_ip = "127.0.0.1";  // (the probe is the proxy's own request)
    f.request_id = "health-check";
    f.framing = http::Framing::kLength;
    f.content_length = body_.size();
    x_->send_head(req, f);
    x_->send_body(body_.data(), body_.size(), true);
    x_->expect_response(false, cfg_.timeout);
    x_->write();
    body_.clear();  // the response's bytes go here
  }

  // The answer: HTTP 200, grpc-status 0 and SERVING is healthy; anything else says why not.
  void judge_grpc() {
    if (status_ != 200) {
      done(ProbeResult::kFailure, "HTTP " + std::to_string(status_) + " to the gRPC health check");
      return;
    }
    if (grpc_status_ != 0) {
      done(ProbeResult::kFailure, grpc_status_ < 0 ? std::string("gRPC health check answered without grpc-status")
                                                   : "grpc-status " + std::to_string(grpc_status_) +
                                                         (grpc_message_.empty() ? "" : " (" + grpc_message_ + ")"));
      return;
    }
    int serving = 0;
    if (!http::parse_health_response(body_, serving)) {
      done(ProbeResult::kFailure, "gRPC health check answer is not a HealthCheckResponse");
      return;
    }
    if (serving != 1) {
      done(ProbeResult::kFailure, std::string("gRPC serving status ") + http::serving_status_name(serving));
      return;
    }
    done(ProbeResult::kSuccess, "gRPC SERVING");
  }

  void end_probe() {
    if (conn_) {
      conn_->close();
      conn_ = nullptr;
    }
    if (x_) {
      x_->close();  // (a probe cut short: its stream is reset, the connection stays)
      x_ = nullptr;
    }
    status_ = 0;
    grpc_status_ = -1;
    grpc_message_.clear();
    complete_ = false;
  }

  // A probe finished: count it, maybe change the instance's health, schedule the next one.
  void done(ProbeResult r, const std::string& reason) {
    if (!probing_ || stopped_) return;
    probing_ = false;
    end_probe();
    if (hc_.hooks_.on_probe) hc_.hooks_.on_probe(service_, r);
    const registry::Instance* inst = hc_.reg_.find(service_, id_);
    if (!inst || inst->uid != uid_) return;  // sync() will stop us
    const uint64_t now = uv_now(hc_.loop_);
    hc_.reg_.note_probe(service_, id_, r == ProbeResult::kSuccess, static_cast<uint32_t>(now - probe_started_ms_), static_cast<int64_t>(now));
    std::string why;
    if (r == ProbeResult::kSuccess) {
      fails_ = 0;
      ++passes_;
      why = reason + "; " + std::to_string(passes_) + " consecutive passes";
      if (inst->health != registry::Health::kHealthy && passes_ >= cfg_.healthy_threshold) {
        hc_.hooks_.log("health check: " + service_ + "/" + id_ + " is healthy (" + why + ")");
        hc_.reg_.set_health(service_, id_, registry::Health::kHealthy, why);
        if (hc_.hooks_.on_healthy) hc_.hooks_.on_healthy(uid_);
      } else {
        hc_.reg_.set_health(service_, id_, inst->health, why);
      }
    } else {
      passes_ = 0;
      ++fails_;
      why = reason + "; " + std::to_string(fails_) + " consecutive failures";
      if (inst->health != registry::Health::kUnhealthy && fails_ >= cfg_.unhealthy_threshold) {
        hc_.hooks_.log("health check: " + service_ + "/" + id_ + " is unhealthy (" + why + ")");
        hc_.reg_.set_health(service_, id_, registry::Health::kUnhealthy, why);
      } else {
        hc_.reg_.set_health(service_, id_, inst->health, why);
      }
    }
    // Next probe after interval ± jitter. After the first probe (at once, so a new instance is
    // judged quickly) the second comes at a random point of the interval: instances registered
    // together would otherwise be probed together, in a burst every interval.
    const double interval = static_cast<double>(cfg_.interval.count());
    const double j = cfg_.jitter * interval;
    const double u = hc_.rng_.unit();
    const double next = std::max(1.0, first_done_ ? interval + (2 * u - 1) * j : u * interval);
    first_done_ = true;
    uv_timer_start(&timer_, on_timer, static_cast<uint64_t>(next), 0);
  }

  bool status_expected(int st) const {
    for (const auto& [lo, hi] : cfg_.expected_status)
      if (st >= lo && st <= hi) return true;
    return false;
  }

  // UpstreamOwner
  void on_upstream_connected(upstream::Exchange*) override {
    if (cfg_.type == conf::HealthCheck::Type::kGrpc) {
      send_grpc_probe();
      return;
    }
    upstream::UpstreamConn* c = conn_;
    if (cfg_.type == conf::HealthCheck::Type::kTcp) {
      done(ProbeResult::kSuccess, "TCP connect ok");
      return;
    }
    std::string& out = c->out().scratch();
    size_t from = c->out().begin_copy();
    out.append("GET ").append(cfg_.path).append(" HTTP/1.1\r\nHost: ");
    out.append(cfg_.host.empty() ? address_.text : cfg_.host);
    out.append("\r\nUser-Agent: switchyard-health-check\r\nConnection: close\r\n\r\n");
    c->out().end_copy(from);
    c->expect_response(false, cfg_.timeout);
    c->request_sent(cfg_.timeout);  // a probe is a few bytes: timed from now
    c->write();
  }
  void on_upstream_head(upstream::Exchange*, const http::MessageHead& head) override {
    if (head.status < 200) return;
    status_ = head.status;
    if (cfg_.type == conf::HealthCheck::Type::kGrpc) note_grpc_status(head, 0);  // (trailers-only)
  }
  void on_upstream_body(upstream::Exchange*, const char* p, size_t n) override {
    // A HealthCheckResponse is a few bytes; an instance that streams more is not answering it.
    if (cfg_.type == conf::HealthCheck::Type::kGrpc && body_.size() + n <= 4096) body_.append(p, n);
  }
  void on_upstream_trailers(upstream::Exchange*, const http::MessageHead& head, size_t first) override {
    note_grpc_status(head, first);
  }
  void note_grpc_status(const http::MessageHead& h, size_t first) {
    const int st = http::grpc_status_in(h, first);
    if (st < 0) return;
    grpc_status_ = st;
    std::string_view msg;
    for (size_t i = first; i < h.count(); ++i)
      if (http::iequals(h.name(i), "grpc-message")) msg = h.value(i).substr(0, 200);
    grpc_message_.assign(msg);
  }
  void on_upstream_complete(upstream::Exchange*) override { complete_ = true; }
  bool on_upstream_read_done(upstream::Exchange*) override {
    if (cfg_.type == conf::HealthCheck::Type::kGrpc) {
      if (complete_) judge_grpc();
      return false;
    }
    if (status_ > 0) {
      int st = status_;
      status_ = 0;
      complete_ = false;
      if (status_expected(st)) done(ProbeResult::kSuccess, "HTTP " + std::to_string(st));
      else done(ProbeResult::kFailure, "HTTP " + std::to_string(st) + " not in expected_status");
    }
    return false;
  }
  void on_upstream_error(upstream::Exchange* c, upstream::UpstreamError e) override {
    conn_ = nullptr;  // already closed
    x_ = nullptr;
    if (e == upstream::UpstreamError::kTlsFailed) {
      done(ProbeResult::kFailure, "probe TLS failed: " + c->tls_error());
      return;
    }
    const bool timeout = e == upstream::UpstreamError::kConnectTimeout || e == upstream::UpstreamError::kResponseTimeout ||
                         e == upstream::UpstreamError::kIdleTimeout;
    done(timeout ? ProbeResult::kTimeout : ProbeResult::kFailure, std::string("probe ") + upstream::error_name(e));
  }
  void on_upstream_drained(upstream::Exchange*) override {}

  HealthChecker& hc_;
  uv_timer_t timer_{};
  uint64_t uid_;
  uint64_t probe_started_ms_ = 0;
  std::string service_, id_;
  conf::Address address_;
  bool tls_;  // registered over TLS
  std::optional<conf::UpstreamProtocol> protocol_;  // its registration's "protocol"
  conf::HealthCheck cfg_;
  upstream::UpstreamConn* conn_ = nullptr;
  upstream::Exchange* x_ = nullptr;  // a gRPC probe's stream
  std::string body_;                 // its request, then its response message
  std::string grpc_message_;
  int grpc_status_ = -1;
  uint32_t passes_ = 0, fails_ = 0;
  int status_ = 0;
  bool complete_ = false;
  bool probing_ = false;
  bool stopped_ = false;
  bool first_done_ = false;
};

HealthChecker::HealthChecker(uv_loop_t* loop, net::BufferPool& buffers, registry::Registry& reg, Hooks hooks)
    : loop_(loop), buffers_(buffers), reg_(reg), hooks_(std::move(hooks)), rng_(uv_hrtime()) {}

HealthChecker::~HealthChecker() { stop_all(); }

void HealthChecker::sync(const registry::Registry::Dirty* dirty) {
  if (dirty && !dirty->all) {
    for (const auto& name : dirty->services) {
      auto it = reg_.services().find(name);
      const registry::Service* svc = it == reg_.services().end() ? nullptr : &it->second;
      // The changed instances only, unless the service's check may have changed (or it is gone).
      if (svc && !dirty->whole_service(name)) {
        for (const auto& id : dirty->ids(name)) sync_instance(name, *svc, id);
      } else {
        sync_service(name, svc);
      }
    }
    return;
  }
  std::unordered_set<std::string> seen;
  for (const auto& [name, svc] : reg_.services()) {
    sync_service(name, &svc);
    seen.insert(name);
  }
  std::vector<std::string> gone;
  for (const auto& [name, ids] : by_service_)
    if (!seen.count(name)) gone.push_back(name);
  for (const auto& name : gone) sync_service(name, nullptr);
}

namespace {
// The check that probes an instance: its own, else its service's; null when none (or type none).
const conf::HealthCheck* check_of(const registry::Service& svc, const registry::Instance& inst) {
  const conf::HealthCheck* hc = inst.has_health_check ? &inst.health_check
                                : svc.cfg.has_health_check ? &svc.cfg.health_check
                                                            : nullptr;
  return hc && hc->type != conf::HealthCheck::Type::kNone ? hc : nullptr;
}
}  // namespace

HealthChecker::Session* HealthChecker::session_for(const registry::Instance& inst, const conf::HealthCheck& hc,
                                                   uint64_t old_uid) {
  auto it = sessions_.find(old_uid);
  if (it != sessions_.end()) {
    Session* s = it->second;
    sessions_.erase(it);
    if (old_uid == inst.uid && s->config() == hc) return s;
    // Any field changed (HealthCheck compares all of them), or a new endpoint: a new session
    // probes at once with the new settings, its pass/fail streaks starting over.
    s->stop();
  }
  return new Session(*this, inst, hc);
}

void HealthChecker::sync_instance(const std::string& name, const registry::Service& svc, const std::string& id) {
  auto& ids = by_service_[name];
  auto iit = svc.instances.find(id);
  const registry::Instance* inst = iit == svc.instances.end() ? nullptr : &iit->second;
  const conf::HealthCheck* hc = inst ? check_of(svc, *inst) : nullptr;
  auto old = ids.find(id);
  const uint64_t old_uid = old == ids.end() ? 0 : old->second;
  if (hc) {
    sessions_[inst->uid] = session_for(*inst, *hc, old_uid);
    ids[id] = inst->uid;
    return;
  }
  if (old != ids.end()) {
    if (auto sit = sessions_.find(old_uid); sit != sessions_.end()) {
      sit->second->stop();
      sessions_.erase(sit);
    }
    ids.erase(old);
  }
  if (ids.empty()) by_service_.erase(name);
}

void HealthChecker::sync_service(const std::string& name, const registry::Service* svc) {
  auto& ids = by_service_[name];
  std::unordered_map<std::string, uint64_t> keep;
  std::vector<std::pair<uint64_t, Session*>> sessions;
  if (svc) {
    for (const auto& [id, inst] : svc->instances) {
      const conf::HealthCheck* hc = check_of(*svc, inst);
      if (!hc) continue;
      auto old = ids.find(id);
      sessions.emplace_back(inst.uid, session_for(inst, *hc, old == ids.end() ? 0 : old->second));
      keep.emplace(id, inst.uid);
      if (old != ids.end()) ids.erase(old);
    }
  }
  // What this service had and no longer needs.
  for (const auto& [id, uid] : ids) {
    auto it = sessions_.find(uid);
    if (it == sessions_.end()) continue;
    it->second->stop();
    sessions_.erase(it);
  }
  for (auto& [uid, s] : sessions) sessions_[uid] = s;
  ids = std::move(keep);
  if (ids.empty()) by_service_.erase(name);
}

void HealthChecker::stop_all() {
  for (auto& [uid, s] : sessions_) s->stop();
  sessions_.clear();
  by_service_.clear();
}

}  // namespace sy::health
