// Everything one event loop's proxy traffic shares: its loop, read buffers, upstream pool, the
// routing snapshot slot, counters. One per worker thread; all of it is touched only by that
// loop's thread except `table` (an atomic slot written by the main loop) and `config`, which is
// swapped only on the worker's own loop.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <random>

#include "conf/config.h"
#include "health/runtime.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/server/exchange.h"
#include "proxy/server/routing_table.h"
#include "proxy/upstream/pool.h"

namespace sy::server {

class DownstreamConn;

// What the request path reports after each exchange (metrics, access log). Implemented by the
// app; called on the worker's loop.
class ExchangeObserver {
 public:
  virtual ~ExchangeObserver() = default;
  struct Record {
    std::string_view client;
    std::string_view method;
    std::string_view path;
    std::string_view host;
    int status = 0;
    uint64_t bytes_in = 0;
    uint64_t bytes_out = 0;
    double seconds = 0;
    std::string_view service;
    std::string_view instance;
    int attempts = 0;
    std::string_view request_id;
    std::string_view error;
    void* service_stats = nullptr;  // health::ServiceRuntime::stats, when the service is known
  };
  virtual void on_exchange(const Record& r) = 0;
  // One upstream attempt got a response head (also those a retry throws away).
  virtual void on_upstream_response(health::InstanceRuntime* rt, std::string_view service, std::string_view instance,
                                    int status) = 0;
  virtual void on_connections(int64_t delta) = 0;
};

struct Worker {
  uv_loop_t* loop = nullptr;
  std::shared_ptr<const conf::Config> config;
  RoutingTableSlot* table = nullptr;
  net::BufferPool buffers;
  ExchangePool exchanges;
  upstream::Pool pool;
  ExchangeObserver* observer = nullptr;
  health::Runtime* health = nullptr;  // outcomes feed breakers and outlier detection
  std::vector<conf::Address> own_listeners;

  // Live downstream connections, for shutdown.
  DownstreamConn* conns = nullptr;
  size_t conn_count = 0;
  bool shutting_down = false;
  // Called when the last connection closes during shutdown.
  void (*on_drained)(Worker*) = nullptr;
  void* app = nullptr;

  uint64_t rng_state = 0x9E3779B97F4A7C15ull;
  uint64_t next_random() {
    // xorshift64*: request ids need uniqueness, not secrecy.
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
  }
};

}  // namespace sy::server
