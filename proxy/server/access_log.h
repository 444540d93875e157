// Access log: one JSON object per exchange, appended to a buffer and written in batches (when
// 64 KiB gather or on the periodic flush). A failed write drops the batch, counts it, and says
// so once; it never blocks or stops the proxy. reopen() serves logrotate (SIGUSR1).
#pragma once

#include <cstdint>
#include <string>

#include "proxy/server/worker.h"

namespace sy::server {

class AccessLog {
 public:
  ~AccessLog();
  // "" = off, "-" = stdout, else a path opened for append. Returns "" or an error.
  std::string open(const std::string& target);
  std::string reopen();
  void append(const ExchangeObserver::Record& r);
  void flush();
  bool enabled() const { return fd_ >= 0; }
  uint64_t dropped() const { return dropped_; }

 private:
  void close_fd();
  std::string target_;
  std::string buf_;
  int fd_ = -1;
  uint64_t dropped_ = 0;
  long second_ = -1;          // the second second_text_ was formatted for
  char second_text_[32] = {};  // "2026-11-21T20:51:37."
  size_t second_text_len_ = 0;
  bool warned_ = false;
};

}  // namespace sy::server
