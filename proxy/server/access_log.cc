// AccessLog: JSON lines, batched writes.
#include "proxy/server/access_log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "proxy/net/log.h"

namespace sy::server {

namespace {

// A JSON string of any bytes. Plain printable ASCII (nearly every value) is copied as it is;
// anything else goes through nlohmann's serializer, which escapes what JSON needs and writes U+FFFD
// for bytes that are not UTF-8 (a client may send any bytes in a path or header), so every line
// stays valid JSON.
void json_string(std::string& out, std::string_view s) {
  bool plain = true;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\' || c < 0x20 || c >= 0x7f) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out.push_back('"');
    out.append(s);
    out.push_back('"');
    return;
  }
  out += nlohmann::json(std::string(s)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

constexpr size_t kFlushAt = 64 * 1024;

}  // namespace

AccessLogFile::~AccessLogFile() { close_fd(); }

void AccessLogFile::close_fd() {
  if (fd_ > 2) ::close(fd_);
  fd_ = -1;
  enabled_.store(false, std::memory_order_relaxed);
}

std::string AccessLogFile::open(const std::string& target) {
  std::lock_guard<std::mutex> lock(mu_);
  close_fd();
  target_ = target;
  if (target.empty()) return "";
  if (target == "-") {
    fd_ = 1;
  } else {
    fd_ = ::open(target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0) return "cannot open access log " + target + ": " + std::strerror(errno);
  }
  enabled_.store(true, std::memory_order_relaxed);
  return "";
}

std::string AccessLogFile::reopen() {
  std::string target;
  {
    std::lock_guard<std::mutex> lock(mu_);
    target = target_;
  }
  return open(target);
}

uint64_t AccessLogFile::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void AccessLogFile::write(const std::string& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return;
  size_t off = 0;
  while (off < batch.size()) {
    ssize_t w = ::write(fd_, batch.data() + off, batch.size() - off);
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
}

void AccessLog::append(const ExchangeObserver::Record& r) {
  if (!file_.enabled()) return;
  timeval tv{};
  gettimeofday(&tv, nullptr);
  // The calendar part changes once a second: format it then, not per line.
  if (tv.tv_sec != second_) {
    second_ = tv.tv_sec;
    tm t{};
    gmtime_r(&tv.tv_sec, &t);
    second_text_len_ = std::strftime(second_text_, sizeof second_text_, "%Y-%m-%dT%H:%M:%S.", &t);
  }
  const int ms = static_cast<int>(tv.tv_usec / 1000);
  char num[160];
  buf_.append("{\"time\":\"");
  buf_.append(second_text_, second_text_len_);
  buf_.push_back(static_cast<char>('0' + ms / 100));
  buf_.push_back(static_cast<char>('0' + ms / 10 % 10));
  buf_.push_back(static_cast<char>('0' + ms % 10));
  buf_.push_back('Z');
  buf_.append("\",\"client\":");
  json_string(buf_, r.client);
  buf_.append(",\"method\":");
  json_string(buf_, r.method);
  buf_.append(",\"path\":");
  json_string(buf_, r.path);
  buf_.append(",\"host\":");
  json_string(buf_, r.host);
  auto number = [&](const char* key, uint64_t v) {
    buf_.append(key);
    auto [end, ec] = std::to_chars(num, num + sizeof num, v);
    buf_.append(num, static_cast<size_t>(end - num));
  };
  number(",\"status\":", static_cast<uint64_t>(r.status));
  number(",\"bytes_in\":", r.bytes_in);
  number(",\"bytes_out\":", r.bytes_out);
  // Duration in seconds with microsecond precision, without printf.
  const uint64_t us = static_cast<uint64_t>(r.seconds * 1e6 + 0.5);
  number(",\"duration\":", us / 1000000);
  char frac[7] = {'.'};
  for (uint64_t i = 6, f = us % 1000000; i >= 1; --i, f /= 10) frac[i] = static_cast<char>('0' + f % 10);
  buf_.append(frac, 7);
  number(",\"attempts\":", static_cast<uint64_t>(r.attempts));
  buf_.append(",\"service\":");
  json_string(buf_, r.service);
  buf_.append(",\"instance\":");
  json_string(buf_, r.instance);
  buf_.append(",\"request_id\":");
  json_string(buf_, r.request_id);
  if (!r.protocol.empty()) {
    buf_.append(",\"protocol\":");
    json_string(buf_, r.protocol);
  }
  if (!r.tls_version.empty()) {
    buf_.append(",\"tls_version\":");
    json_string(buf_, r.tls_version);
    buf_.append(",\"tls_sni\":");
    json_string(buf_, r.tls_sni);
    buf_.append(",\"alpn\":");
    json_string(buf_, r.alpn);
  }
  if (r.grpc) {  // a gRPC call: its method (the path) and the status its client got, if any
    buf_.append(",\"grpc_method\":");
    json_string(buf_, r.path);
    if (r.grpc_status >= 0) number(",\"grpc_status\":", static_cast<uint64_t>(r.grpc_status));
  }
  if (!r.error.empty()) {
    buf_.append(",\"error\":");
    json_string(buf_, r.error);
  }
  if (!r.rate_limited.empty()) {  // refused by this policy (429), or in dry_run would have been
    buf_.append(",\"rate_limited\":");
    json_string(buf_, r.rate_limited);
  }
  buf_.append("}\n");
  if (buf_.size() >= kFlushAt) flush();
}

void AccessLog::flush() {
  if (buf_.empty()) return;
  file_.write(buf_);
  buf_.clear();
}

}  // namespace sy::server
