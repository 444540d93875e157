// The shared registry's keys and the one decoder of etcd's watch messages: what a message says,
// as plain structs, before anything is applied (registry/etcd/backend.cc applies them). Pure: no
// I/O, never throws, any input is safe (a libFuzzer target feeds it arbitrary bytes).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sy::registry::etcd {

// {prefix}services/{service}/instances/{id}
std::string instance_key(const std::string& prefix, const std::string& service, const std::string& id);
// The inverse; false for any other key (or names the admin API would refuse).
bool parse_instance_key(const std::string& prefix, const std::string& key, std::string& service, std::string& id);
// {prefix}deregistrations: written with each deregistration, listing the keys it deleted.
std::string deregistrations_key(const std::string& prefix);

struct WatchChange {
  std::string service, id;
  bool put = false;        // else deleted
  bool expired = false;    // deleted without a deregistration marker of the same revision: a lease ran out
  std::string value;       // put: the stored registration document (JSON text)
  int64_t lease = 0;
  int64_t revision = 0;
};

struct WatchMessage {
  bool canceled = false;
  int64_t compact_revision = 0;  // canceled because this revision is gone: read everything again
  std::string cancel_reason;
  bool created = false;
  int64_t progress_revision = 0;  // a progress notification: everything up to here was sent
  int64_t last_revision = 0;      // the highest revision among the events
  std::vector<WatchChange> changes;
  // Instances named by a deregistration marker (removed even where they have no key left: stale).
  std::vector<std::pair<std::string, std::string>> deregistered;
};

// `result` is one watch message's "result" object.
WatchMessage decode_watch_message(const nlohmann::json& result, const std::string& prefix);

}  // namespace sy::registry::etcd
