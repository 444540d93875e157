// Access log: one JSON object per exchange, appended to a buffer and written in batches (when
// 64 KiB gather or on the periodic flush). A failed write drops the batch, counts it, and says
// so once; it never blocks or stops the proxy. reopen() serves logrotate (SIGUSR1).
//
// Threading: one AccessLogFile per process (the file; open/reopen on the main loop), one
// AccessLog buffer per worker. Workers format into their own buffer without a lock; a batch is
// written with one write(2) under the file's lock (whole lines, O_APPEND), so lines of different
// workers never interleave.
#pragma once

#include <cstdint>
#include <atomic>
#include <mutex>
#include <string>

#include "proxy/server/worker.h"

namespace sy::server {

class AccessLogFile {
 public:
  ~AccessLogFile();
  // "" = off, "-" = stdout, else a path opened for append. Returns "" or an error.
  std::string open(const std::string& target);
  std::string reopen();
  // Writes one batch of whole lines (or drops it, counted, when the write fails).
  void write(const std::string& batch);
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  uint64_t dropped() const;

 private:
  void close_fd();
  mutable std::mutex mu_;
  std::string target_;
  int fd_ = -1;
  std::atomic<bool> enabled_{false};
  uint64_t dropped_ = 0;
  bool warned_ = false;
};

class AccessLog {
 public:
  explicit AccessLog(AccessLogFile& file) : file_(file) {}
  ~AccessLog() { flush(); }
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;
  void append(const ExchangeObserver::Record& r);
  void flush();

 private:
  AccessLogFile& file_;
  std::string buf_;
  long second_ = -1;          // the second second_text_ was formatted for
  char second_text_[32] = {};  // "2026-11-21T20:51:37."
  size_t second_text_len_ = 0;
};

}  // namespace sy::server
