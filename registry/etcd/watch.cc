// Keys and the watch-message decoder of the shared registry.
#include "registry/etcd/watch.h"

#include <map>
#include <set>

#include "proxy/http/base64.h"
#include "registry/codec.h"
#include "registry/etcd/client.h"

namespace sy::registry::etcd {

std::string instance_key(const std::string& prefix, const std::string& service, const std::string& id) {
  return prefix + "services/" + service + "/instances/" + id;
}

bool parse_instance_key(const std::string& prefix, const std::string& key, std::string& service, std::string& id) {
  const std::string head = prefix + "services/";
  if (key.compare(0, head.size(), head) != 0) return false;
  const size_t mid = key.find("/instances/", head.size());
  if (mid == std::string::npos) return false;
  service = key.substr(head.size(), mid - head.size());
  id = key.substr(mid + 11);
  return valid_service_name(service) && valid_instance_id(id);
}

std::string deregistrations_key(const std::string& prefix) { return prefix + "deregistrations"; }

WatchMessage decode_watch_message(const nlohmann::json& result, const std::string& prefix) {
  WatchMessage m;
  if (!result.is_object()) return m;
  m.canceled = bool_field(result, "canceled");
  m.compact_revision = int_field(result, "compact_revision");
  m.cancel_reason = str_field(result, "cancel_reason");
  m.created = bool_field(result, "created");
  auto ev_it = result.find("events");
  if (ev_it == result.end() || !ev_it->is_array() || ev_it->empty()) {
    if (!m.created && !m.canceled && result.contains("header")) m.progress_revision = int_field(result["header"], "revision");
    return m;
  }
  const nlohmann::json& events = *ev_it;
  const std::string marker = deregistrations_key(prefix);
  // Markers first: a delete in the same revision as a marker listing its key is a deregistration.
  std::map<int64_t, std::set<std::string>> deregistered;
  for (const auto& ev : events) {
    if (!ev.is_object() || str_field(ev, "type") == "DELETE" || !ev.contains("kv")) continue;
    const auto& kv = ev["kv"];
    if (http::base64_decode(str_field(kv, "key")) != marker) continue;
    nlohmann::json list = nlohmann::json::parse(http::base64_decode(str_field(kv, "value")), nullptr, false);
    if (!list.is_array()) continue;
    auto& keys = deregistered[int_field(kv, "mod_revision")];
    for (const auto& k : list) {
      if (!k.is_string()) continue;
      keys.insert(k.get<std::string>());
      std::string s, id;
      if (parse_instance_key(prefix, k.get<std::string>(), s, id)) m.deregistered.emplace_back(s, id);
    }
  }
  for (const auto& ev : events) {
    if (!ev.is_object() || !ev.contains("kv")) continue;
    const auto& kv = ev["kv"];
    WatchChange c;
    c.revision = int_field(kv, "mod_revision");
    m.last_revision = std::max(m.last_revision, c.revision);
    const std::string key = http::base64_decode(str_field(kv, "key"));
    if (!parse_instance_key(prefix, key, c.service, c.id)) continue;
    c.put = str_field(ev, "type") != "DELETE";
    if (c.put) {
      c.value = http::base64_decode(str_field(kv, "value"));
      c.lease = int_field(kv, "lease");
    } else {
      auto d = deregistered.find(c.revision);
      c.expired = d == deregistered.end() || !d->second.count(key);
    }
    m.changes.push_back(std::move(c));
  }
  return m;
}

}  // namespace sy::registry::etcd
