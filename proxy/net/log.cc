// Event log on stderr: "2026-11-21T20:51:37.123Z info message".
#include "proxy/net/log.h"

#include <sys/time.h>

#include <atomic>
#include <cstdio>
#include <ctime>

namespace sy::log {

namespace {
std::atomic<Level> g_level{Level::kInfo};  // set on the main loop, read by every worker
const char* name(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "?";
}
}  // namespace

void set_level(Level l) { g_level.store(l, std::memory_order_relaxed); }

Level parse_level(std::string_view s) {
  if (s == "debug") return Level::kDebug;
  if (s == "warn") return Level::kWarn;
  if (s == "error") return Level::kError;
  return Level::kInfo;
}

bool enabled(Level l) { return l >= g_level.load(std::memory_order_relaxed); }

namespace {
void emit(const char* level, std::string_view msg);
}

void notice(std::string_view msg) { emit("notice", msg); }

void write(Level l, std::string_view msg) {
  if (!enabled(l)) return;
  emit(name(l), msg);
}

namespace {
void emit(const char* level, std::string_view msg) {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm t{};
  gmtime_r(&tv.tv_sec, &t);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &t);
  std::fprintf(stderr, "%s.%03dZ %s %.*s\n", ts, static_cast<int>(tv.tv_usec / 1000), level, static_cast<int>(msg.size()),
               msg.data());
  std::fflush(stderr);
}
}  // namespace

}  // namespace sy::log
