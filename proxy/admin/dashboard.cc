// Dashboard: the overview, a service's instance page, and the traffic windows behind them.
#include "proxy/admin/dashboard.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

namespace sy::admin {

using nlohmann::json;

namespace {

constexpr int64_t kWatchedMs = 120000;  // sampled while looked at within this
constexpr size_t kDefaultPage = 100;
constexpr size_t kMaxPage = 1000;

AdminResponse json_response(int status, const json& j) {
  AdminResponse r;
  r.status = status;
  r.body = j.dump() + "\n";  // compact: the page's reads stay small
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

bool parse_size(const std::string& s, size_t& out) {
  if (s.empty() || s.size() > 9) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace

void TrafficWindow::add(int64_t now_ms, Metrics::Totals totals) {
  if (!samples_.empty() && now_ms - samples_.back().t_ms < kSampleMs) return;
  samples_.push_back({now_ms, std::move(totals)});
  while (samples_.size() > 1 && now_ms - samples_.front().t_ms > kSpanMs + kSampleMs) samples_.pop_front();
}

double TrafficWindow::quantile(double q, const std::vector<double>& bounds, const std::vector<double>& delta) {
  if (delta.empty() || delta.back() <= 0) return -1;
  const double target = q * delta.back();
  for (size_t i = 0; i < delta.size(); ++i) {
    if (delta[i] < target) continue;
    if (i >= bounds.size()) return bounds.empty() ? -1 : bounds.back();  // in +Inf: the last finite bound
    const double lower = i == 0 ? 0 : bounds[i - 1];
    const double below = i == 0 ? 0 : delta[i - 1];
    const double in = delta[i] - below;
    return in <= 0 ? bounds[i] : lower + (bounds[i] - lower) * (target - below) / in;
  }
  return bounds.empty() ? -1 : bounds.back();
}

json TrafficWindow::rates(int64_t now_ms, const Metrics::Totals& now) const {
  // The oldest reading within the minute (the newest when none is that old yet).
  const Sample* base = nullptr;
  for (const auto& s : samples_) {
    if (now_ms - s.t_ms <= kSpanMs + kSampleMs / 2) {
      base = &s;
      break;
    }
  }
  if (!base || now_ms - base->t_ms < 1000) return nullptr;
  const double secs = static_cast<double>(now_ms - base->t_ms) / 1000.0;
  json j{{"window_s", std::round(secs)},
         {"req_s", std::max(0.0, now.requests - base->totals.requests) / secs},
         {"err5xx_s", std::max(0.0, now.errors - base->totals.errors) / secs}};
  if (!now.cumulative.empty() && now.cumulative.size() == base->totals.cumulative.size()) {
    std::vector<double> delta(now.cumulative.size());
    for (size_t i = 0; i < delta.size(); ++i) delta[i] = std::max(0.0, now.cumulative[i] - base->totals.cumulative[i]);
    const auto& bounds = Metrics::duration_bounds();
    const double p50 = quantile(0.5, bounds, delta), p99 = quantile(0.99, bounds, delta);
    j["p50_ms"] = p50 < 0 ? json(nullptr) : json(p50 * 1000);
    j["p99_ms"] = p99 < 0 ? json(nullptr) : json(p99 * 1000);
  }
  return j;
}

std::string instance_why(const registry::Instance& inst, int64_t now) {
  std::string why;
  if (inst.draining) why = "not routable: draining (no new requests; in-flight ones finish)";
  else if (inst.ejected)
    why = "not routable: ejected by outlier detection (ejection #" + std::to_string(inst.ejections) + ") for another " +
          std::to_string(std::max<int64_t>(0, inst.ejected_until_ms - now)) + " ms";
  else if (inst.breaker_open)
    why = "not routable: circuit breaker open for another " +
          std::to_string(std::max<int64_t>(0, inst.breaker_open_until_ms - now)) + " ms, then half-open (trial requests)";
  else if (inst.stale) why = "routable only as a last resort: its lease expired in a mass expiry and it was kept (stale) until it heartbeats again";
  else if (inst.health == registry::Health::kUnhealthy) why = "not routable: failing health checks (" + inst.health_reason + ")";
  else if (inst.health == registry::Health::kUnknown)
    why = "routable only when no instance is healthy: not yet probed healthy" +
          (inst.health_reason.empty() ? std::string() : " (" + inst.health_reason + ")");
  else why = "routable: healthy" + (inst.health_reason.empty() ? std::string() : " (last probe: " + inst.health_reason + ")");
  if (inst.source == registry::Source::kDynamic && inst.ttl.count() > 0) {
    const int64_t left = inst.lease_expires_ms - now;
    why += "; lease " + (left > 0 ? "expires in " + std::to_string(left) + " ms" : std::string("expired"));
  } else if (inst.source == registry::Source::kDynamic) {
    why += "; no lease (registered without a TTL)";
  }
  return why;
}

Metrics::Totals Dashboard::instance_totals(uint64_t uid, uint32_t& active) {
  active = 0;
  const health::InstanceMetrics* m = hooks_.instance_runtime ? hooks_.instance_runtime(uid, active) : nullptr;
  return m ? metrics_.instance_totals(*m) : Metrics::Totals{};
}

void Dashboard::tick(int64_t now) {
  if (overview_read_ms_ >= 0 && now - overview_read_ms_ <= kWatchedMs) {
    for (const auto& [name, svc] : reg_.services()) services_[name].add(now, metrics_.service_totals(name));
    std::erase_if(services_, [&](const auto& e) { return !reg_.services().count(e.first); });
  } else {
    services_.clear();
  }
  for (auto it = watched_.begin(); it != watched_.end();) {
    auto svc = reg_.services().find(it->first);
    if (now - it->second.read_ms > kWatchedMs || svc == reg_.services().end()) {
      it = watched_.erase(it);
      continue;
    }
    auto& windows = it->second.instances;
    std::unordered_map<uint64_t, TrafficWindow> next;
    next.reserve(svc->second.instances.size());
    for (const auto& [id, inst] : svc->second.instances) {
      uint32_t active = 0;
      auto w = windows.find(inst.uid);
      TrafficWindow& win = next[inst.uid];
      if (w != windows.end()) win = std::move(w->second);
      win.add(now, instance_totals(inst.uid, active));
    }
    windows = std::move(next);  // instances gone since are forgotten
    ++it;
  }
}

void Dashboard::add_endpoints(EndpointTable& table, size_t family,
                              const std::function<AdminResponse(int, const std::string&, const std::string&)>& error) {
  table.add(Endpoint::row(kGet, "/v1/dashboard", Access::kRead,
                          "the dashboard's overview: services with req/s, 5xx/s, p50/p99 over the last minute, routes, banners",
                          family, [this](Call&) { return overview(); }));
  table.add(Endpoint::row(kGet, "/v1/dashboard/services/{service}", Access::kRead,
                          "one page of a service's instances with why, last probe and traffic (?state=&tag=&q=&sort=&order=&offset=&limit=)",
                          family, [this, error](Call& c) { return instances(c.arg(0), c.req, error); }));
}

AdminResponse Dashboard::overview() {
  const int64_t now = hooks_.now_ms();
  if (overview_read_ms_ < 0 || now - overview_read_ms_ > kWatchedMs) {
    // Looked at again after a pause: the first reading now, rates from the next tick on.
    overview_read_ms_ = now;
    tick(now);
  }
  overview_read_ms_ = now;
  const conf::Config& cfg = hooks_.config();
  json services = json::array();
  for (const auto& [name, svc] : reg_.services()) {
    json states = json::object();
    std::set<std::pair<std::string, std::string>> routes;  // registered by its instances
    for (const auto& [id, inst] : svc.instances) {
      states[inst.state_name()] = states.value(inst.state_name(), 0) + 1;
      for (const auto& r : inst.routes) routes.emplace(r.host, r.path_prefix);
    }
    json rlist = json::array();
    for (const auto& r : cfg.routes)
      if (r.service == name) rlist.push_back({{"host", r.host}, {"path_prefix", r.path_prefix}, {"from", "config"}});
    for (const auto& [host, prefix] : routes) rlist.push_back({{"host", host}, {"path_prefix", prefix}, {"from", "registration"}});
    json traffic = nullptr;
    auto w = services_.find(name);
    if (w != services_.end()) traffic = w->second.rates(now, metrics_.service_totals(name));
    services.push_back({{"name", name},
                        {"instances", svc.instances.size()},
                        {"states", states},
                        {"lb", conf::lb_name(svc.cfg.lb)},
                        {"source", svc.in_config ? "config" : "registry"},
                        {"rate_limit", svc.cfg.rate_limit.name},
                        {"health_check", svc.cfg.has_health_check ? "yes" : "none"},
                        {"routes", rlist},
                        {"traffic", traffic}});
  }
  json j = hooks_.status ? hooks_.status() : json::object();
  j["services"] = services;
  j["index"] = reg_.index();
  j["events_last_id"] = hooks_.events_last_id ? hooks_.events_last_id() : 0;
  j["token_required"] = hooks_.token_required && hooks_.token_required();
  return json_response(200, j);
}

AdminResponse Dashboard::instances(const std::string& service, const AdminRequest& req,
                                   const std::function<AdminResponse(int, const std::string&, const std::string&)>& error) {
  auto svc = reg_.services().find(service);
  if (svc == reg_.services().end()) return error(404, "not_found", "no service " + service);
  size_t offset = 0, limit = kDefaultPage;
  if (req.has_param("offset") && !parse_size(req.query_param("offset"), offset))
    return error(400, "bad_request", "'offset' must be a whole number");
  if (req.has_param("limit") && (!parse_size(req.query_param("limit"), limit) || limit > kMaxPage))
    return error(400, "bad_request", "'limit' must be a whole number up to " + std::to_string(kMaxPage));
  static const std::set<std::string> kSorts{"id", "state", "address", "weight", "zone", "source", "active", "req_s", "err5xx_s", "ejections", "probe_ms"};
  const std::string sort = req.has_param("sort") ? req.query_param("sort") : "id";
  if (!kSorts.count(sort)) return error(400, "bad_request", "'sort' must be one of id, state, address, weight, zone, source, active, req_s, err5xx_s, ejections, probe_ms");
  const std::string order = req.has_param("order") ? req.query_param("order") : "asc";
  if (order != "asc" && order != "desc") return error(400, "bad_request", "'order' must be asc or desc");
  std::set<std::string> states;
  const std::string state_param = req.query_param("state");
  for (std::string_view s = state_param; !s.empty();) {
    const size_t comma = s.find(',');
    if (comma != 0) states.emplace(s.substr(0, comma));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  const std::string tag = req.query_param("tag");
  const std::string q = req.query_param("q");
  const std::string only = req.query_param("id");

  const int64_t now = hooks_.now_ms();
  Watched& watched = watched_[service];
  const bool fresh = watched.read_ms == 0 || now - watched.read_ms > kWatchedMs;
  watched.read_ms = now;
  if (fresh) tick(now);  // a first reading of its instances; rates from the next tick on

  struct Row {
    const registry::Instance* inst;
    uint32_t active;
    Metrics::Totals totals;
    json traffic;
  };
  std::vector<Row> rows;
  std::set<std::string> all_tags;
  for (const auto& [id, inst] : svc->second.instances) {
    for (const auto& t : inst.tags) all_tags.insert(t);
    if (!only.empty() && id != only) continue;
    if (!states.empty() && !states.count(inst.state_name())) continue;
    if (!tag.empty() && std::find(inst.tags.begin(), inst.tags.end(), tag) == inst.tags.end()) continue;
    if (!q.empty() && id.find(q) == std::string::npos && inst.address.text.find(q) == std::string::npos) continue;
    rows.push_back({&inst, 0, {}, nullptr});
  }
  const bool by_traffic = sort == "req_s" || sort == "err5xx_s" || sort == "active";
  auto fill = [&](Row& r) {
    r.totals = instance_totals(r.inst->uid, r.active);
    auto w = watched.instances.find(r.inst->uid);
    if (w != watched.instances.end()) r.traffic = w->second.rates(now, r.totals);
  };
  if (by_traffic)
    for (auto& r : rows) fill(r);
  auto num = [](const json& t, const char* k) { return t.is_object() && t.contains(k) ? t[k].get<double>() : -1.0; };
  auto less = [&](const Row& a, const Row& b) {
    const registry::Instance &x = *a.inst, &y = *b.inst;
    if (sort == "state") return std::string_view(x.state_name()) < std::string_view(y.state_name());
    if (sort == "address") return x.address.text < y.address.text;
    if (sort == "weight") return x.weight < y.weight;
    if (sort == "zone") return x.zone < y.zone;
    if (sort == "source") return x.source < y.source;
    if (sort == "active") return a.active < b.active;
    if (sort == "req_s") return num(a.traffic, "req_s") < num(b.traffic, "req_s");
    if (sort == "err5xx_s") return num(a.traffic, "err5xx_s") < num(b.traffic, "err5xx_s");
    if (sort == "ejections") return x.ejections < y.ejections;
    if (sort == "probe_ms") return x.probe_latency_ms < y.probe_latency_ms;
    return false;  // "id": the map's order already
  };
  if (sort != "id") std::stable_sort(rows.begin(), rows.end(), less);
  if (order == "desc") std::reverse(rows.begin(), rows.end());

  json list = json::array();
  for (size_t i = offset; i < rows.size() && i < offset + limit; ++i) {
    Row& r = rows[i];
    if (!by_traffic) fill(r);
    const registry::Instance& inst = *r.inst;
    json j = hooks_.instance_json(inst);
    j["why"] = instance_why(inst, now);
    j["active"] = r.active;
    j["traffic"] = r.traffic;
    j["last_probe"] = inst.probed_ms == 0 ? json(nullptr)
                                          : json{{"ok", inst.probe_ok},
                                                 {"latency_ms", inst.probe_latency_ms},
                                                 {"age_ms", std::max<int64_t>(0, now - inst.probed_ms)},
                                                 {"detail", inst.health_reason}};
    if (inst.breaker_open) j["breaker_left_ms"] = std::max<int64_t>(0, inst.breaker_open_until_ms - now);
    if (inst.ejected) j["ejected_left_ms"] = std::max<int64_t>(0, inst.ejected_until_ms - now);
    list.push_back(std::move(j));
  }
  return json_response(200, {{"service", service},
                             {"total", rows.size()},
                             {"instances_in_service", svc->second.instances.size()},
                             {"offset", offset},
                             {"limit", limit},
                             {"tags", all_tags},
                             {"instances", list}});
}

}  // namespace sy::admin
