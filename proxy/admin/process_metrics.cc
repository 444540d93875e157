// ProcessMetrics: /proc/self/stat, /proc/self/fd and RLIMIT_NOFILE at each scrape.
#include "proxy/admin/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

namespace sy::admin {

namespace {

prometheus::MetricFamily family(const char* name, const char* help, prometheus::MetricType type, double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(m);
  return f;
}

// Field `n` (1-based, as proc(5) numbers them) of /proc/self/stat; 0 when unreadable.
struct Stat {
  double utime = 0, stime = 0, rss_pages = 0;
};

Stat read_stat() {
  Stat st;
  std::ifstream f("/proc/self/stat");
  const std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces and ')': fields count from after its last ')'.
  const size_t rp = s.rfind(')');
  if (rp == std::string::npos) return st;
  std::string_view rest = std::string_view(s).substr(rp + 1);
  int field = 2;
  while (!rest.empty()) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    const size_t end = std::min(rest.find(' '), rest.size());
    const std::string_view tok = rest.substr(0, end);
    ++field;
    double* out = field == 14 ? &st.utime : field == 15 ? &st.stime : field == 24 ? &st.rss_pages : nullptr;
    if (out) {
      uint64_t v = 0;
      std::from_chars(tok.data(), tok.data() + tok.size(), v);
      *out = static_cast<double>(v);
    }
    if (field >= 24) break;
    rest.remove_prefix(end);
  }
  return st;
}

}  // namespace

ProcessMetrics::ProcessMetrics()
    : start_time_(static_cast<double>(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count())) {}

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  const Stat st = read_stat();
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++fds;
    closedir(d);
    fds -= 3;  // ".", ".." and the directory's own fd
  }
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  using prometheus::MetricType;
  return {family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", MetricType::Counter,
                 (st.utime + st.stime) / tick),
          family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
                 st.rss_pages * static_cast<double>(sysconf(_SC_PAGESIZE))),
          family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, fds),
          family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
                 static_cast<double>(rl.rlim_cur)),
          family("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                 MetricType::Gauge, start_time_)};
}

}  // namespace sy::admin
