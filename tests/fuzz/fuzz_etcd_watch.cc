// libFuzzer target: the shared registry's watch-message decoder (what etcd's watch stream delivers,
// decoded before anything is applied), then the registration decoder on every value it yields.
// Nothing may throw or crash; every change names a valid service and id.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "registry/codec.h"
#include "registry/etcd/watch.h"

using namespace sy::registry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  const nlohmann::json& result = j.is_object() && j.contains("result") ? j["result"] : j;
  const etcd::WatchMessage m = etcd::decode_watch_message(result, "/switchyard/");
  for (const auto& c : m.changes) {
    if (!valid_service_name(c.service) || !valid_instance_id(c.id)) __builtin_trap();
    if (c.revision > m.last_revision) __builtin_trap();
    if (!c.put) continue;
    const nlohmann::json v = nlohmann::json::parse(c.value, nullptr, false);
    if (v.is_discarded()) continue;
    Registration r;
    Error err;
    (void)decode_registration(v, r, DocKind::kStored, err);
  }
  return 0;
}
