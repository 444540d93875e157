// Per-exchange working storage and its per-loop pool (see Exchange).
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "proxy/http/head.h"
#include "proxy/net/out_batch.h"

namespace sy::server {

// The working storage of one exchange: the parsed request head, the output batch towards the client,
// the normalised host, the rewritten target, the request id and the replay buffer. Taken from the worker's pool when a
// request's first byte arrives and given back when the connection goes idle, so an idle keep-alive
// connection holds none of it (and a busy one reuses warm capacity: no allocation per request).
struct Exchange {
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
