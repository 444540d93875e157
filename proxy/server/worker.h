// Everything one event loop's proxy traffic shares: its loop, listeners, read buffers, upstream
// pool, the routing snapshot it uses, counters. One per worker (the main loop's own with
// `workers: 1`, else one per WorkerThread); all of it is touched only by that loop's thread
// except `table`, an atomic slot written by the main loop.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "conf/config.h"
#include "health/runtime.h"
#include "proxy/http/exchange_record.h"
#include "proxy/net/random.h"
#include "proxy/net/buffer_pool.h"
#include "proxy/net/end_of_turn.h"
#include "proxy/net/listener.h"
#include "proxy/net/resource.h"
#include "proxy/net/tls_session.h"
#include "proxy/server/exchange.h"
#include "proxy/server/routing_table.h"
#include "proxy/upstream/h2_upstream.h"
#include "proxy/upstream/pool.h"

namespace sy::server {

class DownstreamConn;

// What the request path reports after each exchange (metrics, access log). Implemented by the
// app; called on the worker's loop.
class ExchangeObserver {
 public:
  virtual ~ExchangeObserver() = default;
  using Record = http::ExchangeRecord;
  virtual void on_exchange(const Record& r) = 0;
  // One upstream attempt got a response head (also those a retry throws away).
  virtual void on_upstream_response(health::InstanceRuntime* rt, std::string_view service, std::string_view instance,
                                    int status) = 0;
  virtual void on_connections(int64_t delta) = 0;
  // The proxy ran short of `r` (`what` says where); counted, and logged at most once a second.
  virtual void on_exhaustion(net::Resource r, std::string_view what) = 0;
  // A TLS handshake with an instance failed: counted and logged with OpenSSL's or the verifier's reason.
  virtual void on_upstream_tls_failure(std::string_view /*service*/, std::string_view /*instance*/, std::string_view /*reason*/,
                                       const std::string& /*why*/) {}
  // A TLS handshake on a listener of this worker ended (ok: done; resumed sessions say so).
  virtual void on_tls_handshake(const net::TlsServerConfig& /*listener*/, const net::TlsSession& /*s*/, bool /*ok*/) {}
  // An HTTP/2 client connection was ended with GOAWAY for misbehaving ("flood", "protocol_error").
  virtual void on_h2_goaway(std::string_view /*reason*/) {}
  // HTTP/2 streams from clients opened (+1) or closed (-1).
  virtual void on_h2_streams(int64_t /*delta*/) {}
  // Periodic, on the worker's loop: write out what is batched (the access log).
  virtual void flush() {}
};

struct Worker {
  uv_loop_t* loop = nullptr;
  RoutingTableSlot* table = nullptr;
  net::BufferPool buffers;
  ExchangePool exchanges;
  upstream::Pool pool;
  upstream::H2Pool h2_pool;  // HTTP/2 connections to instances (services.X.protocol: h2c)
  ExchangeObserver* observer = nullptr;
  std::vector<std::unique_ptr<net::Listener>> listeners;
  std::vector<conf::Address> own_listeners;  // their bound addresses (requests to them are loops)
  // max_connections, this worker's share. At it, listeners are left un-accepted (libuv then stops
  // watching them and clients wait in the backlog) and listed here until a connection closes.
  size_t max_conns = SIZE_MAX;
  std::vector<uv_stream_t*> paused_listeners;

  // Outcomes of upstream attempts feed breakers and outlier detection, which live on the main
  // loop. On the main loop (`health` set) they are applied at once; a worker thread collects them
  // in `outcomes` and its loop hands the batch over once per iteration (WorkerThread).
  health::Runtime* health = nullptr;
  std::vector<health::Runtime::Report> outcomes;
  void report(const std::shared_ptr<health::InstanceRuntime>& rt, health::Outcome o) {
    // A success changes nothing unless there is a failure streak to reset or a breaker to close:
    // then it is not worth a message (the main loop raises the flag when it matters).
    if ((o == health::Outcome::kSuccess || o == health::Outcome::kNeutral) &&
        !rt->wants_successes.load(std::memory_order_relaxed))
      return;
    if (health) health->record(*rt, o);
    else outcomes.emplace_back(rt, o);
  }

  // The latest routing snapshot (and the config it carries). One load of the slot's generation
  // per call; the shared pointer is copied only when a new snapshot was published.
  const std::shared_ptr<const RoutingTable>& snapshot() {
    const uint64_t g = table->generation();
    if (g != snapshot_gen_) {
      snapshot_ = table->load();
      snapshot_gen_ = g;
      if (snapshot_ && snapshot_->config != config_seen_) {
        reloaded_ = config_seen_ != nullptr;  // (the first snapshot is no reload)
        config_seen_ = snapshot_->config;
      }
    }
    return snapshot_;
  }
  // Periodic (every tick): closes idle upstream connections to instances no longer in the
  // snapshot; about once a second gives back buffers and exchanges a burst left parked; after a
  // reload, GOAWAY on every HTTP/2 connection (config_reloaded).
  void upkeep();

  // Live downstream connections, for shutdown.
  DownstreamConn* conns = nullptr;
  size_t conn_count = 0;
  bool shutting_down = false;
  // Stops accepting; idle connections close now, busy ones after their exchange. on_drained runs
  // when the last one is gone (at once if there are none).
  void begin_shutdown();
  // Closes every connection, listener and pooled connection now.
  void close_all();
  void (*on_drained)(Worker*) = nullptr;
  void* app = nullptr;

  net::Random rng;  // picks, request ids, retry jitter: uniqueness, not secrecy
  uint64_t next_random() { return rng.next(); }

  // Sends put off to the end of this loop turn (HTTP/2 client connections: one write per turn).
  net::EndOfTurn end_of_turn;

 private:
  std::shared_ptr<const RoutingTable> snapshot_;
  uint64_t snapshot_gen_ = ~uint64_t{0};
  uint64_t pools_checked_seq_ = 0;  // the snapshot (RoutingTable::seq) whose departures were handled
  unsigned ticks_ = 0;
  // The config of the latest snapshot (held, so a new one can never reuse its address
  // unnoticed); reloaded_: a later one replaced it, for the next upkeep to act on.
  std::shared_ptr<const conf::Config> config_seen_;
  bool reloaded_ = false;
  void close_orphaned_pools();
  // A reload published a new config: HTTP/2 connections carry settings and limits from the old
  // one for their whole life, so each gets a graceful GOAWAY (its streams finish; the client
  // reconnects to the new settings), as Envoy drains on a listener change. HTTP/1.1 connections
  // take the new config at their next exchange (DownstreamConn::reset_for_next).
  void config_reloaded();
};

}  // namespace sy::server
