// Who serves a route carried by a registration when something else claims the same host and path
// prefix. The rule the routing snapshot applies (proxy/server/routing_table.cc) and the admin API
// reports (a registration's "route_conflicts"): a config route wins, the operator's file being the
// authority; between registrations of different services, the earliest registered instance's
// service keeps it.
#pragma once

#include <string>

#include "conf/config.h"
#include "registry/registry.h"

namespace sy::registry {

// "" when `service` serves `spec`, else a sentence naming the winner.
std::string route_owner(const Registry& reg, const conf::Config& cfg, const RouteSpec& spec, const std::string& service);

}  // namespace sy::registry
