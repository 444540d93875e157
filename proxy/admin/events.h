// GET /v1/events: the admin listener's server-sent-event stream (docs/admin-api.md, "Events") of
// registry changes, health flips with their reason, breaker changes, ejections, reloads,
// self-preservation and the registry backend going away or coming back.
//
// Cost model (issue 26): an event is encoded once, into one shared frame, whatever the number of
// watchers; every watcher's connection queues a reference to that frame (no copy). A watcher whose
// queue is more than kMaxBehind bytes behind is dropped (it reconnects with Last-Event-ID and is
// replayed what it missed from the history), so a slow reader never holds memory without bound.
// The history keeps the last kHistory events; a Last-Event-ID older than that gets a `resync`
// event (the reader reloads its views) and the stream continues from now.
// Main loop only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>

#include "proxy/admin/admin_conn.h"

namespace sy::admin {

struct Event {
  uint64_t id = 0;
  std::string type;      // registry, health, breaker, outlier, reload, self_preservation, registry_backend, panic
  int64_t time_ms = 0;   // wall clock (Unix ms)
  std::string service;   // "" when the event is not about one service
  std::string instance;  // "" when not about one instance
  std::string message;   // the log line's sentence
};

// "instance registered: orders/o-1 at ..." → ("orders", "o-1"): the subject every event sentence
// of the registry, health checker and runtime names after its first ": ". Empty when there is none.
std::pair<std::string, std::string> event_subject(std::string_view message);

class EventStream {
 public:
  static constexpr size_t kHistory = 1000;
  static constexpr size_t kMaxBehind = 1024 * 1024;
  static constexpr int64_t kRetryMs = 2000;      // the reader's reconnect delay (EventSource `retry:`)
  static constexpr int64_t kHeartbeatMs = 15000;  // a comment line, so proxies and readers see it alive

  // Ids start at the process's start time in microseconds: a reader that comes back to a restarted
  // proxy with the old process's Last-Event-ID is told to resync instead of missing events whose
  // ids the new process happened to reuse.
  explicit EventStream(int64_t start_unix_ms) : first_id_(static_cast<uint64_t>(start_unix_ms) * 1000), next_id_(first_id_) {}

  // Encodes the event once and sends it to every watcher; returns its id. The subject is taken
  // from the sentence (event_subject), else `service`.
  uint64_t publish(std::string type, std::string message, int64_t time_ms, std::string service = "");
  // Starts the stream on `conn` (the answer head, `retry:`, then the events after `last_id`, or
  // everything in the history when `last_id` is 0 and `replay_all`).
  void watch(AdminConn* conn, uint64_t last_id, bool has_last_id);
  void forget(AdminConn* conn) { watchers_.erase(conn); }
  // Periodic (the admin tick): a heartbeat comment to every watcher when one is due.
  void tick(int64_t now_ms);
  size_t watchers() const { return watchers_.size(); }
  uint64_t encoded() const { return encoded_; }
  uint64_t last_id() const { return next_id_ - 1; }
  // The history as JSON objects (newest last): GET /v1/events?format=json, for tests and scripts.
  std::string history_json(size_t limit) const;

 private:
  struct Stored {
    Event event;
    std::shared_ptr<const std::string> frame;  // "id: N\nevent: T\ndata: {...}\n\n"
  };
  void send(AdminConn* conn, const std::shared_ptr<const std::string>& frame);
  std::deque<Stored> history_;
  std::unordered_set<AdminConn*> watchers_;
  uint64_t first_id_;
  uint64_t next_id_;
  uint64_t encoded_ = 0;
  int64_t last_beat_ms_ = 0;
  std::shared_ptr<const std::string> beat_ = std::make_shared<const std::string>(": heartbeat\n\n");
};

}  // namespace sy::admin
