// plan_transactions: a batch of writes as etcd transactions within etcd's limits.
#include "registry/etcd/txn.h"

#include "proxy/http/base64.h"

namespace sy::registry::etcd {

std::vector<nlohmann::json> plan_transactions(const std::vector<TxnOp>& ops_in, const std::string& marker_key) {
  using nlohmann::json;
  std::vector<json> txns;
  json ops = json::array(), deleted = json::array();
  size_t bytes = 0;
  auto close_txn = [&] {
    if (ops.empty()) return;
    if (!deleted.empty())
      ops.push_back({{"request_put", {{"key", http::base64_encode(marker_key)}, {"value", http::base64_encode(deleted.dump())}}}});
    txns.push_back(json{{"success", std::move(ops)}});
    ops = json::array();
    deleted = json::array();
    bytes = 0;
  };
  for (const TxnOp& op : ops_in) {
    // Base64 makes 4 bytes of 3; the rest is the operation's JSON around them (and the marker's
    // share for a delete).
    const size_t op_bytes = (op.key.size() * 2 + op.value.size()) * 4 / 3 + 96;
    if (!ops.empty() && (bytes + op_bytes > kTxnBytes || ops.size() >= kOpsPerTxn)) close_txn();
    bytes += op_bytes;
    if (op.put) {
      json put{{"key", http::base64_encode(op.key)}, {"value", http::base64_encode(op.value)}};
      if (op.lease != 0) put["lease"] = std::to_string(op.lease);
      ops.push_back({{"request_put", std::move(put)}});
    } else {
      ops.push_back({{"request_delete_range", {{"key", http::base64_encode(op.key)}}}});
      deleted.push_back(op.key);
    }
  }
  close_txn();
  return txns;
}

}  // namespace sy::registry::etcd
