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
// Threading: every method runs on the main loop; only the compaction thread's merge runs elsewhere,
// on files alone (it never touches the Registry).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
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

  // Appends the current state of each changed key (its registration, or a deletion) and fsyncs.
  // Called once per loop turn with what changed in it. Returns "" or the error.
  std::string write(const Registry& reg, const std::vector<std::pair<std::string, std::string>>& keys);

  // Starts a compaction when the journal has outgrown the snapshot and none is running; reaps a
  // finished one. Cheap when there is nothing to do (call it every loop turn or tick). `log` hears
  // what happened.
  void maybe_compact(uint64_t index, const std::function<void(const std::string&)>& log);
  // Compact once the journal is larger than this and than the snapshot (registry.journal_max).
  void set_compact_bytes(uint64_t n) { compact_bytes_ = n; }
  // Waits for a running compaction (shutdown).
  void close();

  uint64_t journal_bytes() const { return bytes_; }
  uint64_t sequence() const { return seq_; }

 private:
  std::string open_for_append(uint64_t seq);
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
