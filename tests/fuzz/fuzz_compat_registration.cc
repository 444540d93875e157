// libFuzzer target: the Consul and Eureka registration translators (what any Consul or Eureka client
// may send to the admin listener). The first byte picks the translator; what is accepted must be a
// registration the one codec stores and reads back unchanged, and every refusal must say why.
#include <cstdint>
#include <string>

#include "proxy/admin/consul_api.h"
#include "proxy/admin/eureka_api.h"
#include "registry/codec.h"

using namespace sy;

namespace {
void round_trips(const registry::Registration& r) {
  registry::Registration back;
  registry::Error err;
  const auto doc = registry::encode_registration(r, registry::DocKind::kStored);
  if (!registry::decode_registration(doc, back, registry::DocKind::kStored, err)) __builtin_trap();
  if (registry::encode_registration(back, registry::DocKind::kStored) != doc) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 64 * 1024) return 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      admin::ConsulRegistration out;
      registry::Error e;
      if (admin::decode_consul_registration(body, "10.0.0.1", out, e)) round_trips(out.reg);
      else if (e.message.empty()) __builtin_trap();
      break;
    }
    default: {
      admin::EurekaRegistration out;
      registry::Error e;
      const bool ok = admin::decode_eureka_instance(body, data[0] % 3 == 1 ? "application/json" : "application/xml", "app",
                                                    out, e);
      if (ok) round_trips(out.reg);
      else if (e.message.empty()) __builtin_trap();
      break;
    }
  }
  return 0;
}
