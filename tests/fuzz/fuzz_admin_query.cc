// libFuzzer target: the admin API's query-string parser (percent-decoding included), as every
// GET /v1/services/{s}?... uses it.
#include <cstdint>
#include <string>

#include "proxy/admin/admin_conn.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16 * 1024) return 0;
  sy::admin::AdminRequest req;
  req.query.assign(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"index", "wait", "healthy", "tag", "passing", "token", ""}) {
    const std::string v = req.query_param(name);
    if (v.size() > size) __builtin_trap();  // decoding never grows the text
  }
  return 0;
}
