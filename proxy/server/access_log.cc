// AccessLog: JSON lines, batched writes.
#include "proxy/server/access_log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "proxy/net/log.h"

namespace sy::server {

namespace {

void json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out.append(b);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

constexpr size_t kFlushAt = 64 * 1024;

}  // namespace

AccessLog::~AccessLog() {
  flush();
  close_fd();
}

void AccessLog::close_fd() {
  if (fd_ > 2) ::close(fd_);
  fd_ = -1;
}

std::string AccessLog::open(const std::string& target) {
  flush();
  close_fd();
  target_ = target;
  if (target.empty()) return "";
  if (target == "-") {
    fd_ = 1;
    return "";
  }
  fd_ = ::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) return "cannot open access log " + target + ": " + std::strerror(errno);
  return "";
}

std::string AccessLog::reopen() { return open(target_); }

void AccessLog::append(const ExchangeObserver::Record& r) {
  if (fd_ < 0) return;
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm t{};
  gmtime_r(&tv.tv_sec, &t);
  char ts[40];
  size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &t);
  std::snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000));
  char num[160];
  buf_.append("{\"time\":\"");
  buf_.append(ts);
  buf_.append("\",\"client\":");
  json_string(buf_, r.client);
  buf_.append(",\"method\":");
  json_string(buf_, r.method);
  buf_.append(",\"path\":");
  json_string(buf_, r.path);
  buf_.append(",\"host\":");
  json_string(buf_, r.host);
  std::snprintf(num, sizeof num, ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration\":%.6f,\"attempts\":%d",
                r.status, static_cast<unsigned long long>(r.bytes_in), static_cast<unsigned long long>(r.bytes_out),
                r.seconds, r.attempts);
  buf_.append(num);
  buf_.append(",\"service\":");
  json_string(buf_, r.service);
  buf_.append(",\"instance\":");
  json_string(buf_, r.instance);
  buf_.append(",\"request_id\":");
  json_string(buf_, r.request_id);
  if (!r.error.empty()) {
    buf_.append(",\"error\":");
    json_string(buf_, r.error);
  }
  buf_.append("}\n");
  if (buf_.size() >= kFlushAt) flush();
}

void AccessLog::flush() {
  if (buf_.empty() || fd_ < 0) {
    buf_.clear();
    return;
  }
  size_t off = 0;
  while (off < buf_.size()) {
    ssize_t w = ::write(fd_, buf_.data() + off, buf_.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ++dropped_;
      if (!warned_) {
        warned_ = true;
        log::warn(std::string("access log write failed (") + std::strerror(errno) + "); dropping lines until it works again");
      }
      break;
    }
    off += static_cast<size_t>(w);
  }
  buf_.clear();
}

}  // namespace sy::server
