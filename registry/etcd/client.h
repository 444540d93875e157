// The etcd v3 client: the JSON gateway's calls (/v3/kv/range, /v3/kv/txn, /v3/lease/grant,
// /v3/lease/keepalive, /v3/watch) on the caller's libuv loop, with no thread and no blocking call
// of its own. Unary calls share a small pool of keep-alive connections to the current member; the
// watch has a connection of its own. After a failure that says "this member cannot serve"
// (connection lost, timeout, no leader, request timed out), the next calls go to the next
// endpoint in the list: the backend's reconnect loop decides when.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "conf/units.h"
#include "registry/etcd/http_conn.h"

namespace sy::registry::etcd {

struct Result {
  bool ok = false;
  // The member (or the cluster) cannot serve now: connection, timeout, no quorum. Another
  // member, or the same one later, may. Not set for answers such as "lease not found".
  bool unavailable = false;
  std::string error;
  // etcd's gRPC status code for an error it answered (0: none, or not etcd answering): what the
  // error is decided by, never its text.
  int64_t code = 0;
  nlohmann::json body;    // the answer (ok) or etcd's error document
  int64_t revision = 0;   // body.header.revision when present
  // The revision asked for is gone (ErrCompacted: gRPC OUT_OF_RANGE).
  bool compacted() const { return code == 11; }
};

class Client {
 public:
  using Callback = std::function<void(Result&)>;
  using Message = std::function<void(const nlohmann::json& result)>;
  using Ended = std::function<void(const std::string& why)>;

  Client(uv_loop_t* loop, std::vector<conf::Address> endpoints, uint64_t timeout_ms,
         std::shared_ptr<const net::TlsClientConfig> tls = nullptr);
  ~Client();  // closes every connection without calling back
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void call(std::string_view path, const nlohmann::json& body, Callback cb);
  // Opens a watch (one at a time; a new one replaces the old quietly). Each message's "result" goes
  // to `on_message`; `on_end` is told once when the stream ends or fails.
  void watch(const nlohmann::json& create_request, Message on_message, Ended on_end);
  void cancel_watch();
  bool watching() const { return watch_ != nullptr; }
  // The member the watch is open on (when watching()).
  const conf::Address& watch_peer() const { return watch_->peer(); }

  // The following calls go to the next endpoint (after the current one failed).
  void next_endpoint();
  const conf::Address& endpoint() const { return endpoints_[current_]; }

  // An answer (or a transport failure) as a Result; pure (unit-tested).
  static Result classify(int status, std::string body, const std::string& transport_error, const conf::Address& from);

 private:
  HttpConn* pick();
  void forget(HttpConn* c);
  uv_loop_t* loop_;
  std::vector<conf::Address> endpoints_;
  size_t current_ = 0;
  uint64_t timeout_ms_;
  std::shared_ptr<const net::TlsClientConfig> tls_;  // https:// endpoints
  std::vector<HttpConn*> pool_;
  HttpConn* watch_ = nullptr;
};

// Key helpers: etcd's range_end for "every key with this prefix".
std::string prefix_end(std::string prefix);

// Fields of etcd's answers, read without trusting their shape: a missing field, or one of another
// type, reads as empty / false / 0 (64-bit numbers come as decimal strings). Nothing here throws.
std::string str_field(const nlohmann::json& j, const char* key);
bool bool_field(const nlohmann::json& j, const char* key);
int64_t int_field(const nlohmann::json& j, const char* key);

}  // namespace sy::registry::etcd
