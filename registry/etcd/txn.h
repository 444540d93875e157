// How a batch of the shared registry's writes becomes etcd transactions (/v3/kv/txn bodies): at
// most 100 operations each (etcd's --max-txn-ops is 128) and about 1 MiB each (its
// --max-request-bytes is 1.5 MiB), so one large registration never sinks the changes that share a
// turn with it; each transaction that deletes instances also writes the deregistration marker
// listing them. Pure.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sy::registry::etcd {

struct TxnOp {
  std::string key;
  bool put = false;   // else delete
  std::string value;  // put: the stored registration document
  int64_t lease = 0;  // put: 0 = none
};

inline constexpr size_t kOpsPerTxn = 100;
inline constexpr size_t kTxnBytes = 1 << 20;

std::vector<nlohmann::json> plan_transactions(const std::vector<TxnOp>& ops, const std::string& marker_key);

}  // namespace sy::registry::etcd
