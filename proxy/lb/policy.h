// The load-balancing seam: a policy chooses one of the endpoints it was built with.
//
// Threading contract: a policy is built on the main loop whenever the routable instance set of a
// service changes (never per request) and published inside an immutable routing snapshot. pick()
// may then be called from any worker loop at once: it must be allocation-free and touch only
// atomics for its mutable state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sy::lb {

struct PickContext {
  uint64_t hash = 0;               // for hashing policies (ring_hash, maglev)
  uint64_t exclude_mask = 0;       // endpoints 0..63 already tried by this request (retries)
};

class Policy {
 public:
  virtual ~Policy() = default;
  // Index of the chosen endpoint, or -1 when there is none.
  virtual int pick(const PickContext& ctx) const = 0;
};

// `weights[i]` is endpoint i's weight (≥ 1). Unknown names fall back to round_robin (config
// validation has already refused them).
std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<uint32_t>& weights);

}  // namespace sy::lb
