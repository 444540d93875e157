// Zone-aware routing (Envoy's zone-aware load balancing, simplified): how much of a service's traffic
// stays in the proxy's own zone, and whether one request spills to the other zones. Pure; the
// routing snapshot (proxy/server/routing_table.cc) puts the local instances first and asks these.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sy::lb {

// The share of requests kept local: 1 while at least 70 % of the local zone's weight is routable
// (or every chosen instance is local), shrinking in proportion below that, 0 with no local instance.
// `local_up`: routable local weight; `local_total`: all local weight, drained instances included
// (a drained instance is capacity that is missing).
double zone_local_share(size_t local_count, size_t chosen_count, double local_up, double local_total);

// Whether one request goes to the other zones, given the local share and a uniform 64-bit random.
bool zone_spills(double local_share, uint64_t random);

}  // namespace sy::lb
