// route_owner: who serves a registration-carried route.
#include "registry/route_owner.h"

#include "proxy/http/host.h"

namespace sy::registry {

std::string route_owner(const Registry& reg, const conf::Config& cfg, const RouteSpec& spec, const std::string& service) {
  const std::string h = http::normalize_host(spec.host);
  for (const auto& r : cfg.routes)
    if (http::normalize_host(r.host) == h && r.path_prefix == spec.path_prefix && r.service != service)
      return "the config file routes it to service '" + r.service + "' (config routes win)";
  const Instance* first = nullptr;
  for (const auto& [uid, inst] : reg.route_carriers()) {  // by uid: the first match is the earliest
    for (const auto& rs : inst->routes)
      if (http::normalize_host(rs.host) == h && rs.path_prefix == spec.path_prefix) first = inst;
    if (first) break;
  }
  if (first && first->service != service) return "service '" + first->service + "' registered it first and keeps it";
  return "";
}

}  // namespace sy::registry
