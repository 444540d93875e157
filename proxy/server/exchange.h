// Per-exchange working storage and its per-loop pool (see Exchange).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/head.h"
#include "proxy/http/rewrite.h"
#include "proxy/net/out_batch.h"
#include "proxy/server/slot.h"

namespace sy::health {
struct ServiceRuntime;
struct InstanceRuntime;
}  // namespace sy::health
namespace sy::upstream {
class Exchange;
}  // namespace sy::upstream

namespace sy::server {

struct RoutingTable;
struct Upstreams;
struct Endpoint;

// One exchange's state (ProxyStream's s_): a new exchange starts from `= {}`, never from a
// field-by-field reset.
struct ExchangeState {
  std::shared_ptr<const RoutingTable> table;  // pins endpoints for this exchange
  const Upstreams* upstreams = nullptr;
  const Endpoint* endpoint = nullptr;
  health::ServiceRuntime* srt = nullptr;   // pinned by table
  health::InstanceRuntime* rt = nullptr;   // the current attempt's instance (pinned by table
                                           // through endpoint->runtime: no copy per attempt)
  upstream::Exchange* up = nullptr;        // the current attempt's exchange (HTTP/1.1: its connection)
  http::Framing req_framing = http::Framing::kNone;
  http::Framing resp_framing = http::Framing::kNone;
  uint64_t req_content_length = 0;
  uint64_t body_in = 0;      // request body bytes received
  uint64_t bytes_out = 0;    // response bytes sent to the client
  uint64_t started_ns = 0;   // first byte of the request head
  int64_t attempt_started_ns = 0;  // request head sent (latency for ewma)
  uint64_t tried_mask = 0;   // endpoints (index < 64) already tried
  int status = 0;
  int attempts = 0;
  int error_status = 0;      // set by parser callbacks for 413/414/431
  const char* error_code = nullptr;
  bool message_begun = false;  // bytes of a request head have been parsed
  bool head_done = false;
  bool request_done = false;
  bool response_started = false;
  bool response_done = false;
  bool last_chunk_sent = false;  // (HTTP/1.1 client) with the trailer section: out_end adds none
  bool upgrade = false;       // the request asks for a protocol upgrade
  bool is_head = false;
  bool idempotent = false;
  bool keep_alive_10 = false;
  bool looped = false;        // the request carries this process's Via marker
  bool up_drained = true;     // nothing queued towards the upstream
  bool paused_at_head = false;
  bool paused_at_end = false;
  bool replayable = false;
  bool head_sent = false;        // bytes of this request reached an upstream
  bool outcome_reported = false;
  bool discarding = false;       // reading a retryable response to throw it away
  bool discard_done = false;
  bool backoff = false;          // waiting out the retry backoff
  bool stale_retried = false;    // re-sent once after a pooled connection died under it
  bool grpc = false;             // a gRPC call (content-type application/grpc...)
  bool try_by_deadline = false;  // this try's response timer is the call's grpc-timeout
  int grpc_status = -1;          // the grpc-status the client got (instance's or ours), -1 none yet
  int64_t grpc_deadline_ms = -1; // the call's grpc-timeout from its first byte, -1 none
  std::string tls_error;         // why the last TLS handshake with an instance failed
  std::string_view rate_limited;  // the policy that refused (or in dry_run would have); pinned by table
};

// The working storage of one exchange: its state and limit slots, the parsed request head, the
// output batch towards the client, the normalised host, the rewritten target, the request id and
// the replay buffer. Taken from the worker's pool when a request's first byte arrives and given back
// when the connection goes idle, so an idle keep-alive connection holds none of it (and a busy one
// reuses warm capacity: no allocation per request).
struct Exchange {
  ExchangeState s;
  // Limit slots (after s, whose table pins the counters they point into: destroyed first).
  Slot request_slot;  // srt->active_requests: this exchange
  Slot pending_slot;  // srt->pending: this attempt, until its upstream connection is up
  Slot retry_slot;    // srt->active_retries: this attempt is a budgeted retry
  http::MessageHead req;
  net::OutBatch to_client;
  std::string host;  // Host as routes compare it (http::normalize_host)
  std::string target;
  std::string request_id;
  std::string replay;
  std::string rate_headers;  // RateLimit-Policy / RateLimit lines for the response (limited routes)
};

class ExchangePool {
 public:
  std::unique_ptr<Exchange> acquire() {
    if (free_.empty()) {
      low_ = 0;
      return std::make_unique<Exchange>();
    }
    auto x = std::move(free_.back());
    free_.pop_back();
    low_ = std::min(low_, free_.size());
    return x;
  }
  void release(std::unique_ptr<Exchange> x) {
    if (!x) return;
    // A parked exchange pins no routing table and holds no limit.
    x->request_slot.release();
    x->pending_slot.release();
    x->retry_slot.release();
    x->s = {};
    if (x->replay.capacity() > 4096) std::string().swap(x->replay);  // keep no 64 KiB replay buffers parked
    if (free_.size() < kKeep) free_.push_back(std::move(x));
  }
  // Frees the exchanges nobody took since the last call (as BufferPool::trim).
  void trim() {
    size_t drop = std::min(low_, free_.size() > kFloor ? free_.size() - kFloor : 0);
    free_.resize(free_.size() - drop);
    low_ = free_.size();
  }
  size_t parked() const { return free_.size(); }

 private:
  static constexpr size_t kKeep = 1024;
  static constexpr size_t kFloor = 8;
  std::vector<std::unique_ptr<Exchange>> free_;
  size_t low_ = 0;
};

}  // namespace sy::server
