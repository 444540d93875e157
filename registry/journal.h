// Persistence of dynamic registrations whose cost per change does not grow with the registry: an
// append-only journal of changed registrations, fsync'ed once per loop turn before the changes are
// acknowledged, compacted into the snapshot file on a thread of its own.
//
// Files (docs/admin-api.md, "Persistence files"), for registry.snapshot = PATH:
//   PATH            the snapshot: {"version": 3, "index", "journal": N, "instances": [...]}; it holds
//                   everything up to journal N (exclusive)
//   PATH.journal.K  journals, K = N, N+1, ...: one line per change, {"put": <stored registration>}
//                   or {"del": {"service", "id"}}, each ending in "\n"
// Start-up loads the snapshot, then replays journals N, N+1, ... in order. A last line without its
// "\n" or not valid JSON (kill -9 or power loss mid-write) is dropped and cut off the file; it was
// never acknowledged. Compaction (when the current journal outgrows the snapshot) switches appends
// to journal K+1 at once, then a thread merges the snapshot and journals up to K into a new
// snapshot that says N = K+1, replaces it atomically and deletes the merged journals. A crash at
// any point leaves files that load to the same registry.
//
// Writes and their fdatasync run on a sync thread of the journal's own, so the loop never waits on
// the disk: write_async() encodes the turn's changes on the loop and queues the bytes; the thread
// appends and syncs them (several queued turns in one write and one sync: group commit) and says so
// through on_synced; take_synced() hands the results back on the loop, where the held answers are
// sent. A write that fails (disk full, EIO, the file-size limit) is cut back to the last whole
// record before anything else is appended, so the journal never holds a torn line in its middle;
// its keys are written again with the next write (the registry keeps the change in memory).
//
// Threading: every method runs on the main loop. The sync thread touches only the queue and the
// file; the compaction thread's merge runs on files alone (it never touches the Registry).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "registry/registry.h"

namespace sy::registry {

class Journal {
 public:
  Journal() = default;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal();

  // Loads PATH and its journals into `reg` (leases restart at `now_ms`) and opens the journal to
  // append to. Returns "" or an error naming the file (a corrupt snapshot or journal line that is
  // not the last one stops start-up; the files are left as they are). `notes` gets what a reader
  // should know (a torn last record dropped, versions read).
  std::string open(const std::string& path, Registry& reg, int64_t now_ms, std::vector<std::string>& notes);
  bool is_open() const { return fd_ >= 0; }

  using Keys = std::vector<std::pair<std::string, std::string>>;  // (service, id)
  // Encodes the current state of each changed key (its registration, or a deletion), together
  // with the keys of earlier writes that failed, and queues them for the sync thread. Called once
  // per loop turn with what changed in it. Returns a ticket that take_synced() gives back.
  uint64_t write_async(const Registry& reg, const Keys& keys);
  // Called on the sync thread after each write that finished (App: uv_async_send). Set once, before
  // the first write.
  void set_on_synced(std::function<void()> f) { on_synced_ = std::move(f); }
  // Writes finished since the last call, in ticket order: (ticket, "" = on disk, else the error).
  std::vector<std::pair<uint64_t, std::string>> take_synced();
  // Keys whose write failed and that no later write has covered yet (written with the next call).
  bool has_failed_keys() const { return !retry_.empty(); }
  // write_async and wait for it: "" or the error (tests, tools).
  std::string write(const Registry& reg, const Keys& keys);

  // Starts a compaction when the journal has outgrown the snapshot and none is running; reaps a
  // finished one. Cheap when there is nothing to do (call it every loop turn or tick). `log` hears
  // what happened.
  void maybe_compact(uint64_t index, const std::function<void(const std::string&)>& log);
  // Compact once the journal is larger than this and than the snapshot (registry.journal_max).
  void set_compact_bytes(uint64_t n) { compact_bytes_ = n; }
  // Finishes the queued writes and a running compaction, then closes the file (shutdown). The
  // results of the last writes are still there for take_synced().
  void close();

  uint64_t journal_bytes() const { return bytes_; }
  uint64_t sequence() const { return seq_; }

 private:
  std::string open_for_append(uint64_t seq);
  // The sync thread: takes every queued job, appends them in one write, one fdatasync.
  void sync_loop();
  struct Job {
    uint64_t ticket = 0;
    int fd = -1;
    std::string data;
  };
  struct Done {
    uint64_t ticket = 0;
    std::string error;
    uint64_t bytes = 0;
  };
  std::mutex mu_;  // guards queue_, done_, stop_ (the loop and the sync thread)
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::vector<Done> done_;
  bool stop_ = false;
  std::thread syncer_;
  std::function<void()> on_synced_;
  bool torn_ = false;  // sync thread only: a failed write could not be cut back; nothing more is appended
  uint64_t next_ticket_ = 0;
  size_t in_flight_ = 0;  // queued or being written (loop's count)
  std::map<uint64_t, Keys> keys_of_;  // in-flight tickets' keys, written again if theirs fail
  std::set<std::pair<std::string, std::string>> retry_;
  std::string path_;
  int fd_ = -1;
  uint64_t seq_ = 0;            // the journal being appended to
  uint64_t bytes_ = 0;          // its size
  uint64_t snapshot_bytes_ = 0; // the snapshot's size (compaction threshold)
  uint64_t compact_bytes_ = 4 << 20;
  std::thread compactor_;
  std::atomic<bool> compacting_{false};
  std::string compact_result_;  // written by the thread before compacting_ goes false
  uint64_t compact_snapshot_bytes_ = 0;
};

// Writes a version-3 snapshot of every dynamic instance of `reg` covering journals below `seq`
// (tests, tools). Returns "" or an error.
std::string write_snapshot(const Registry& reg, const std::string& path, uint64_t seq);

}  // namespace sy::registry
