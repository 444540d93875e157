// libFuzzer target: the registration decoder (what any client may PUT to the admin API, and what
// the snapshot file holds). Anything decoded must encode and decode back to itself.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "registry/codec.h"

using namespace sy::registry;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  for (DocKind kind : {DocKind::kRegistration, DocKind::kStored}) {
    Registration r;
    r.service = "svc";
    r.id = "id";
    Error err;
    if (!decode_registration(j, r, kind, err)) {
      if (err.message.empty()) __builtin_trap();  // every refusal names its reason
      continue;
    }
    Registration back;
    if (!decode_registration(encode_registration(r, DocKind::kStored), back, DocKind::kStored, err)) __builtin_trap();
    if (encode_registration(back, DocKind::kStored) != encode_registration(r, DocKind::kStored)) __builtin_trap();
  }
  return 0;
}
