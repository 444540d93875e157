// The load-balancing seam: a policy chooses one of the endpoints it was built with.
//
// Threading contract: a policy is built on the main loop whenever the routable instance set of a
// service changes (never per request) and published inside an immutable routing snapshot. pick()
// may then be called from any worker loop at once: it must be allocation-free, O(1) or O(log n),
// and touch only atomics for its own mutable state. Randomness comes in through the context, so
// a policy holds no generator and tests can replay exact sequences.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "conf/lb_kind.h"
#include "proxy/lb/load.h"

namespace sy::lb {

// What a policy is told about each endpoint when it is built.
struct EndpointInfo {
  uint32_t weight = 1;
  // Stable identity for hashing policies (the instance id), read only while the policy is built:
  // a view of the endpoint's own id, so a build copies no strings.
  std::string_view key;
  const LoadStats* load = nullptr;  // live counters (least_request, ewma); may be null
};

struct PickContext {
  uint64_t random = 0;        // fresh random bits for this pick
  bool has_hash = false;      // hashing policies: the request carried the hash_on key
  uint64_t hash = 0;
  uint64_t exclude_mask = 0;  // endpoints 0..63 already tried by this request (retries)
  int64_t now_ns = 0;         // for time-decayed load (ewma)

  bool excluded(size_t i) const { return i < 64 && (exclude_mask >> i) & 1; }
};

// What a policy may read at pick time instead of copying at build: the endpoints of the snapshot it
// is published in. A policy over a source costs O(1) to build, so a change to one instance of a
// large service does not rebuild per-endpoint policy state (RoutingBuilder).
class EndpointSource {
 public:
  virtual ~EndpointSource() = default;
  virtual size_t size() const = 0;
  virtual uint32_t weight(size_t i) const = 0;
  virtual const LoadStats* load(size_t i) const = 0;  // may be null
};

// A source that owns its arrays (policies built from EndpointInfo).
class VectorSource final : public EndpointSource {
 public:
  explicit VectorSource(const std::vector<EndpointInfo>& eps) {
    weight_.reserve(eps.size());
    load_.reserve(eps.size());
    for (const auto& e : eps) {
      weight_.push_back(e.weight);
      load_.push_back(e.load);
    }
  }
  size_t size() const override { return weight_.size(); }
  uint32_t weight(size_t i) const override { return weight_[i]; }
  const LoadStats* load(size_t i) const override { return load_[i]; }

 private:
  std::vector<uint32_t> weight_;
  std::vector<const LoadStats*> load_;
};

class Policy {
 public:
  virtual ~Policy() = default;
  // Index of the chosen endpoint, or -1 when there is none. With every endpoint excluded, a
  // policy may return an excluded one rather than none.
  virtual int pick(const PickContext& ctx) const = 0;
};

// round_robin | least_request | random | ring_hash | maglev | ewma (unknown → round_robin;
// config validation refuses those already).
std::unique_ptr<Policy> make_policy(conf::Lb lb, const std::vector<EndpointInfo>& endpoints);
// Over a source that outlives the policy, O(1) to build: least_request and ewma always;
// round_robin and random when every weight is the same (`uniform`); nullptr for the rest (ring_hash
// and maglev build tables; weighted round_robin a cycle; weighted random prefix sums).
std::unique_ptr<Policy> make_policy_over(conf::Lb lb, const EndpointSource& src, bool uniform);
// By name (tests, benchmarks): an unknown name is round_robin.
std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<EndpointInfo>& endpoints);

// Weights only (round robin, tests).
std::unique_ptr<Policy> make_policy(const std::string& name, const std::vector<uint32_t>& weights);

}  // namespace sy::lb
