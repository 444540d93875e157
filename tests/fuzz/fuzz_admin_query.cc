// libFuzzer target: the admin API's query-string parser (split once by key, percent-decoding
// included), as every admin, Consul and Eureka call uses it.
#include <cstdint>
#include <string>

#include "proxy/admin/admin_conn.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16 * 1024) return 0;
  sy::admin::AdminRequest req;
  req.parse_query(std::string_view(reinterpret_cast<const char*>(data), size));
  size_t total = 0;
  for (const auto& [k, v] : req.params) total += k.size() + v.size();
  if (total > size) __builtin_trap();  // decoding never grows the text
  for (const char* name : {"index", "wait", "healthy", "tag", "passing", "token", ""}) {
    const std::string v = req.query_param(name);
    if (v.size() > size) __builtin_trap();
    if (!v.empty() && !req.has_param(name)) __builtin_trap();  // a value implies the key
  }
  return 0;
}
