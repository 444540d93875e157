// One proxy worker on its own thread and loop (`workers: N` with N > 1). The main loop keeps the
// registry, admin API, probes and metrics; each worker accepts on its own SO_REUSEPORT listeners
// (the kernel spreads connections over them), reads the routing snapshot the main loop publishes
// and keeps its own buffers and upstream pool. Nothing on a worker's request path takes a lock.
//
// Main → worker: a few flags and one uv_async wake-up (new snapshot, drain, stop).
// Worker → main: the Inbox (outcome batches for breakers and outlier detection, "drained").
#pragma once

#include <uv.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/server/worker.h"

namespace sy::server {

// The main loop's side of the conversation: filled by worker threads, emptied on the main loop.
class Inbox {
 public:
  // `wake` is a uv_async_t on the main loop, initialized by its owner.
  explicit Inbox(uv_async_t* wake) : wake_(wake) {}
  // Worker threads.
  void post(std::vector<health::Runtime::Report>& batch);
  void drained();
  // Main loop.
  std::vector<health::Runtime::Report> take();
  uint32_t drained_count() const { return drained_.load(std::memory_order_acquire); }

 private:
  uv_async_t* wake_;
  std::mutex mu_;
  std::vector<health::Runtime::Report> reports_;
  std::atomic<uint32_t> drained_{0};
};

class WorkerThread {
 public:
  WorkerThread(int index, RoutingTableSlot& table, ExchangeObserver& observer, Inbox& inbox);
  ~WorkerThread();  // stops and joins if still running
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  // Main thread, before start(): binds `addr` with SO_REUSEPORT on this worker's loop. Returns ""
  // or an error; bound() then gives the address (the first worker's port for a port-0 config).
  std::string listen(const conf::Address& addr, conf::Address& bound);
  void start();
  // Main thread, before start(): this worker's share of max_connections.
  void set_max_connections(size_t n) { worker_.max_conns = n; }

  // Main loop → worker (asynchronous).
  void notify_snapshot();  // a new snapshot: switch to it, let the old one go
  void begin_shutdown();   // stop accepting, drain; Inbox::drained() when the last connection left
  void stop();             // close everything now; joins the thread

  size_t connections() const { return conns_.load(std::memory_order_relaxed); }

 private:
  static void on_wake(uv_async_t* a);
  static void on_check(uv_check_t* c);
  static void on_tick(uv_timer_t* t);
  static void on_drained(Worker* w);
  void run();

  enum : uint32_t { kSnapshot = 1, kShutdown = 2, kStop = 4 };
  ExchangeObserver& observer_;
  Inbox& inbox_;
  uv_loop_t loop_{};
  uv_async_t wake_{};
  uv_check_t check_{};
  uv_timer_t tick_{};
  Worker worker_;
  std::atomic<uint32_t> flags_{0};
  std::atomic<size_t> conns_{0};  // for the shutdown log line
  std::thread thread_;
  bool stopped_ = false;          // main thread
  bool stopped_drained_ = false;  // worker thread: drained() said once
};

}  // namespace sy::server
