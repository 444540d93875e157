// Parked long polls and blocking queries, by what they watch (a service name; "" for the whole
// registry): one set for the native API and the Consul front door, parked by the endpoint gate. A change wakes only the watchers of
// its key, so its cost does not grow with the number of watchers elsewhere (hashicorp/consul#1244).
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "proxy/admin/admin_conn.h"

namespace sy::admin {

struct Endpoint;

// A long poll's parameters (?index=N&wait=D), read one way by the native API and Consul's front
// door: `index` a whole decimal number (no sign, no spaces), `wait` a duration in the family's own
// syntax (`parse_wait`: text → milliseconds, false when malformed), 5 minutes when absent, at most
// 10 (Consul's limits).
struct LongPoll {
  static constexpr int64_t kDefaultWaitMs = 5 * 60 * 1000;
  static constexpr int64_t kMaxWaitMs = 10 * 60 * 1000;
  bool asked = false;  // an index was given: the answer may wait
  uint64_t index = 0;
  int64_t wait_ms = kDefaultWaitMs;
  enum class Error { kNone, kIndex, kWait };
  template <class ParseWait>
  static Error parse(const AdminRequest& req, ParseWait parse_wait, LongPoll& out) {
    out = LongPoll{};
    const std::string idx = req.query_param("index");
    if (idx.empty()) return Error::kNone;
    if (idx.size() > 20) return Error::kIndex;
    auto r = std::from_chars(idx.data(), idx.data() + idx.size(), out.index);
    if (r.ec != std::errc() || r.ptr != idx.data() + idx.size()) return Error::kIndex;
    out.asked = true;
    const std::string w = req.query_param("wait");
    if (w.empty()) return Error::kNone;
    int64_t ms = 0;
    if (!parse_wait(w, ms) || ms < 0) return Error::kWait;
    out.wait_ms = std::min(ms, kMaxWaitMs);
    return Error::kNone;
  }
};

class Watchers {
 public:
  struct Watcher {
    AdminConn* conn;
    AdminRequest req;
    uint64_t index;       // answered once the key's index passes this
    int64_t deadline_ms;  // or when this comes
    const Endpoint* endpoint = nullptr;  // its row in the endpoint table: what answers it
    std::vector<std::string> args;       // the row's captures
  };
  using Answer = std::pair<std::string, Watcher>;  // key, watcher

  void add(std::string key, Watcher w) { by_key_.emplace(std::move(key), std::move(w)); }
  bool empty() const { return by_key_.empty(); }
  size_t size() const { return by_key_.size(); }
  void forget(AdminConn* conn) {
    std::erase_if(by_key_, [&](const auto& e) { return e.second.conn == conn; });
  }

  // Takes out the watchers of `key` (all of them when null) whose key's index has passed theirs.
  template <class IndexOf>
  std::vector<Answer> take_changed(const std::string* key, IndexOf index_of) {
    auto first = key ? by_key_.lower_bound(*key) : by_key_.begin();
    auto last = key ? by_key_.upper_bound(*key) : by_key_.end();
    return take(first, last, [&](const std::string& k, const Watcher& w) { return index_of(k) > w.index; });
  }
  // Takes out the watchers whose wait has run out.
  std::vector<Answer> take_due(int64_t now_ms) {
    return take(by_key_.begin(), by_key_.end(), [&](const std::string&, const Watcher& w) { return w.deadline_ms <= now_ms; });
  }

 private:
  using Map = std::multimap<std::string, Watcher>;
  template <class Pred>
  std::vector<Answer> take(Map::iterator first, Map::iterator last, Pred pred) {
    std::vector<Answer> out;
    for (auto it = first; it != last;) {
      if (pred(it->first, it->second)) {
        out.emplace_back(it->first, std::move(it->second));
        it = by_key_.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }
  Map by_key_;
};

}  // namespace sy::admin
