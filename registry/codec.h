// The one encoder and decoder of each registry document, shared by every way in and out: the
// admin API (registration bodies, instance views), the seed catalog, the snapshot file, and the
// shared-registry and Consul/Eureka doors that translate into the same Registration.
//
// Documents (JSON; docs/admin-api.md shows them whole):
// - health check:  {"type", "path", "host", "expected_status": ["200-399"], "interval": "5s",
//                   "timeout": "1s", "jitter": "10%", "healthy_threshold", "unhealthy_threshold"}
// - registration:  {"address", "scheme" ("http" | "https"), "weight", "tags", "meta", "zone", "ttl", "health_check", "routes"}
//                  (what a service PUTs; "ttl": "0s" = no lease)
// - stored registration: the registration plus {"service", "id", "draining"} (one snapshot entry;
//                  one etcd value, which also carries "written_at_ms": wall clock of the write)
// - instance view: the stored registration plus state, source, breaker, ejections (read only)
//
// encode_* writes every field, so decode(encode(x)) == x for any x decode accepted.
// No libuv, no I/O.
#pragma once

#include "registry/error.h"

#include <nlohmann/json.hpp>
#include <string>

#include "registry/registry.h"

namespace sy::registry {

// A decoder answers false and fills a registry::Error (registry/error.h): an admin API error code
// ("bad_field", "unknown_field", "missing_field") and a message naming the field.

nlohmann::json encode_health_check(const conf::HealthCheck& h);
// Fields not in `j` keep the value `h` has (the defaults, for a fresh HealthCheck).
bool decode_health_check(const nlohmann::json& j, conf::HealthCheck& h, Error& err);

enum class DocKind {
  kRegistration,  // from a client: service and id come from the URL, "draining" is not accepted
  kStored,        // from the snapshot file (or a shared store): carries service, id, draining
};

nlohmann::json encode_registration(const Registration& r, DocKind kind = DocKind::kRegistration);
// Fills `r` from `j`. Absent optional fields keep `r`'s values; "address" is required, and with
// kStored so are "service" and "id".
bool decode_registration(const nlohmann::json& j, Registration& r, DocKind kind, Error& err);

// What an instance of the registry was registered with (its lease as resolved: a registration
// that took the default TTL reads back with that TTL).
Registration registration_of(const Instance& inst);

// The instance view of the admin API. `service_check` is the service's health check, shown when
// the instance has none of its own (nullptr: the instance is not probed).
nlohmann::json encode_instance(const Instance& inst, const conf::HealthCheck* service_check);

// Names as the admin API's paths accept them: a service is 1-128 of [A-Za-z0-9._-]; an instance
// id may also hold ':', '[' and ']' (a static instance's id defaults to its address).
bool valid_service_name(const std::string& s);
bool valid_instance_id(const std::string& s);

// Durations and percentages as the config language writes them ("250ms", "5s", "2m"; "10%").
std::string format_duration(conf::Millis d);
std::string format_percent(double fraction);

}  // namespace sy::registry
