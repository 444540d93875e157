// Journal and snapshot files of the registry (see journal.h for the format and the guarantees).
#include "registry/journal.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "registry/codec.h"

namespace sy::registry {

using nlohmann::json;

namespace {

constexpr int kSnapshotVersion = 3;
std::string errno_msg(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

std::string journal_path(const std::string& path, uint64_t seq) { return path + ".journal." + std::to_string(seq); }

bool write_all(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

// A big file written in 1 MiB pieces, each handed to writeback at once: the final fsync then has
// little left to do, so it does not hold the disk (and the loop's journal fdatasync behind it) for
// the whole file at the end.
bool write_spread(int fd, const std::string& data) {
  constexpr size_t kPiece = 1 << 20;
  for (size_t off = 0; off < data.size(); off += kPiece) {
    const size_t n = std::min(kPiece, data.size() - off);
    if (!write_all(fd, std::string_view(data).substr(off, n))) return false;
    ::sync_file_range(fd, static_cast<off_t>(off), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
  }
  return true;
}

// Makes a rename or a new file in `path`'s directory durable.
void sync_dir(const std::string& path) {
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// Reads a whole file. false with errno ENOENT when there is none.
bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

// Atomic replace: temp file, fsync, rename, fsync of the directory.
std::string write_durably(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_msg("cannot create", tmp);
  if (!write_spread(fd, data) || ::fsync(fd) != 0) {
    std::string e = errno_msg("cannot write", tmp);
    ::close(fd);
    return e;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_msg("cannot rename onto", path);
  sync_dir(path);
  return "";
}

// A version-1 entry (switchyard 0.1 wrote its own shape with *_ms numbers) in the stored
// registration's shape, so the one decoder reads both. Version 1 kept no health-check host,
// expected_status or jitter: those get the defaults.
json from_version_1(const json& j) {
  if (!j.is_object()) return j;
  json out = json::object();
  for (const auto& [k, v] : j.items()) {
    if (k == "ttl_ms" && v.is_number_integer()) {
      out["ttl"] = format_duration(conf::Millis(v.get<int64_t>()));
    } else if (k == "health_check" && v.is_object()) {
      json h = json::object();
      for (const auto& [hk, hv] : v.items()) {
        if ((hk == "interval_ms" || hk == "timeout_ms") && hv.is_number_integer())
          h[hk.substr(0, hk.size() - 3)] = format_duration(conf::Millis(hv.get<int64_t>()));
        else
          h[hk] = hv;
      }
      out["health_check"] = h;
    } else {
      out[k] = v;
    }
  }
  return out;
}

using Key = std::pair<std::string, std::string>;  // service, id

// The snapshot's entries by key, and the first journal it does not cover.
std::string read_snapshot(const std::string& path, std::map<Key, json>& entries, uint64_t& seq, uint64_t& size,
                          std::vector<std::string>& notes) {
  std::string text;
  seq = 0;
  size = 0;
  if (!read_file(path, text)) {
    if (errno == ENOENT) return "";
    return errno_msg("cannot read registry snapshot", path);
  }
  size = text.size();
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) return "registry snapshot " + path + " is corrupt: not valid JSON";
  const int version = doc.is_object() && doc.contains("version") && doc["version"].is_number_integer() ? doc["version"].get<int>() : 0;
  if (!doc.is_object() || version < 1 || version > kSnapshotVersion || !doc.contains("instances") || !doc["instances"].is_array())
    return "registry snapshot " + path + " is corrupt: expected {\"version\": " + std::to_string(kSnapshotVersion) +
           ", \"instances\": [...]}";
  if (version < kSnapshotVersion) notes.push_back("registry snapshot " + path + " is version " + std::to_string(version) + "; it is rewritten as version 3 at the next compaction");
  if (version == kSnapshotVersion) {
    if (!doc.contains("journal") || !doc["journal"].is_number_unsigned())
      return "registry snapshot " + path + " is corrupt: no \"journal\" number";
    seq = doc["journal"].get<uint64_t>();
  }
  size_t n = 0;
  for (const auto& j : doc["instances"]) {
    ++n;
    Registration reg;
    Error err;
    json entry = version == 1 ? from_version_1(j) : j;
    if (!decode_registration(entry, reg, DocKind::kStored, err))
      return "registry snapshot " + path + " is corrupt: instance #" + std::to_string(n) + ": " + err.message;
    entries[{reg.service, reg.id}] = std::move(entry);
  }
  return "";
}

// Applies one journal to `entries`. A torn last line is dropped and reported in `torn_at` (the
// offset where the good part ends); a bad line before the last is an error.
std::string replay_journal(const std::string& file, std::map<Key, json>& entries, uint64_t& good_bytes, bool& torn) {
  std::string text;
  torn = false;
  good_bytes = 0;
  if (!read_file(file, text)) return errno_msg("cannot read registry journal", file);
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', pos);
    const bool last = nl == std::string::npos || nl + 1 == text.size();
    if (nl == std::string::npos) {  // no "\n": the write of this record never finished
      torn = true;
      break;
    }
    json rec = json::parse(std::string_view(text).substr(pos, nl - pos), nullptr, false);
    Registration reg;
    Error err;
    bool ok = !rec.is_discarded() && rec.is_object() && rec.size() == 1;
    if (ok && rec.contains("put")) {
      ok = decode_registration(rec["put"], reg, DocKind::kStored, err);
      if (ok) entries[{reg.service, reg.id}] = rec["put"];
    } else if (ok && rec.contains("del")) {
      const json& d = rec["del"];
      ok = d.is_object() && d.contains("service") && d["service"].is_string() && d.contains("id") && d["id"].is_string();
      if (ok) entries.erase({d["service"].get<std::string>(), d["id"].get<std::string>()});
    } else {
      ok = false;
    }
    if (!ok) {
      if (last) {
        torn = true;
        break;
      }
      return "registry journal " + file + " is corrupt at line " + std::to_string(line_no) +
             (err.message.empty() ? "" : ": " + err.message);
    }
    pos = nl + 1;
    good_bytes = pos;
  }
  return "";
}

// The snapshot is laid out one instance per line, so compaction can carry entries over as text:
//   {"version":3,"index":I,"journal":K,"instances":[
//   <entry>,
//   <entry>
//   ]}
// It is one JSON document all the same (start-up reads it as such).
std::string snapshot_header(uint64_t index, uint64_t seq) {
  return "{\"version\":" + std::to_string(kSnapshotVersion) + ",\"index\":" + std::to_string(index) +
         ",\"journal\":" + std::to_string(seq) + ",\"instances\":[";
}

std::string encode_snapshot(const std::map<Key, std::string>& entries, uint64_t index, uint64_t seq) {
  size_t size = 64;
  for (const auto& [key, e] : entries) size += e.size() + 2;
  std::string out;
  out.reserve(size);
  out += snapshot_header(index, seq);
  out += '\n';
  bool first = true;
  for (const auto& [key, e] : entries) {
    if (!first) out += ",\n";
    first = false;
    out += e;
  }
  out += "\n]}\n";
  return out;
}

// The top-level "service" and "id" of one JSON object, found without building it (compaction reads
// every entry of a 100,000-instance snapshot; a DOM per entry would cost as much as the rest together).
class KeyScan : public nlohmann::json_sax<json> {
 public:
  Key result;
  bool found() const { return has_service_ && has_id_; }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool string(string_t& v) override {
    if (depth_ == 1 && last_ == "service") {
      result.first = v;
      has_service_ = true;
    } else if (depth_ == 1 && last_ == "id") {
      result.second = v;
      has_id_ = true;
    }
    return !found();  // both seen: stop reading
  }
  bool start_object(std::size_t) override { return ++depth_ > 0; }
  bool end_object() override { return --depth_ >= 0; }
  bool start_array(std::size_t) override { return ++depth_ > 0; }
  bool end_array() override { return --depth_ >= 0; }
  bool key(string_t& k) override {
    if (depth_ == 1) last_ = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  int depth_ = 0;
  std::string last_;
  bool has_service_ = false, has_id_ = false;
};

bool scan_key(std::string_view object, Key& key) {
  KeyScan scan;
  json::sax_parse(object, &scan);
  if (!scan.found()) return false;
  key = std::move(scan.result);
  return true;
}

// Compaction's reading of the snapshot: entries as text by key. Snapshots in the line layout are
// split by lines; older layouts (one line, versions 1 to 3 of earlier releases) are read whole once.
std::string read_snapshot_text(const std::string& path, std::map<Key, std::string>& entries, uint64_t& seq) {
  std::string text;
  seq = 0;
  if (!read_file(path, text)) {
    if (errno == ENOENT) return "";
    return errno_msg("cannot read registry snapshot", path);
  }
  const std::string_view all(text);
  const size_t eol = all.find('\n');
  const std::string_view head = all.substr(0, eol);
  const std::string prefix = "{\"version\":" + std::to_string(kSnapshotVersion) + ",";
  if (eol != std::string_view::npos && head.substr(0, prefix.size()) == prefix && head.size() > 14 &&
      head.substr(head.size() - 14) == "\"instances\":[") {
    json h = json::parse(std::string(head) + "]}", nullptr, false);
    if (h.is_discarded() || !h.contains("journal") || !h["journal"].is_number_unsigned())
      return "registry snapshot " + path + " has a bad first line";
    seq = h["journal"].get<uint64_t>();
    size_t pos = eol + 1;
    while (pos < all.size()) {
      size_t nl = all.find('\n', pos);
      if (nl == std::string_view::npos) nl = all.size();
      std::string_view line = all.substr(pos, nl - pos);
      pos = nl + 1;
      if (line == "]}") break;
      if (!line.empty() && line.back() == ',') line.remove_suffix(1);
      Key key;
      if (!scan_key(line, key)) return "registry snapshot " + path + ": an entry without service and id";
      entries[std::move(key)] = std::string(line);
    }
    return "";
  }
  std::map<Key, json> parsed;
  uint64_t size = 0;
  std::vector<std::string> notes;
  if (std::string e = read_snapshot(path, parsed, seq, size, notes); !e.empty()) return e;
  for (auto& [key, e] : parsed) entries[key] = e.dump();
  return "";
}

// Compaction's replay of one journal, records as text. The journals it merges were replayed at
// start-up or written since by this process, so a line it cannot read is an error, not a torn tail.
std::string replay_journal_text(const std::string& file, std::map<Key, std::string>& entries) {
  std::string text;
  if (!read_file(file, text)) return errno_msg("cannot read registry journal", file);
  const std::string_view all(text);
  size_t pos = 0, line_no = 0;
  while (pos < all.size()) {
    ++line_no;
    const size_t nl = all.find('\n', pos);
    if (nl == std::string_view::npos) break;  // cannot happen: open() cut torn tails off
    const std::string_view line = all.substr(pos, nl - pos);
    pos = nl + 1;
    Key key;
    // Written by json::dump: {"put":{...}} or {"del":{...}}, no spaces.
    const bool put = line.substr(0, 7) == "{\"put\":", del = line.substr(0, 7) == "{\"del\":";
    if ((!put && !del) || line.back() != '}' || !scan_key(line.substr(7, line.size() - 8), key))
      return "registry journal " + file + " is corrupt at line " + std::to_string(line_no);
    if (put)
      entries[std::move(key)] = std::string(line.substr(7, line.size() - 8));
    else
      entries.erase(key);
  }
  return "";
}
}  // namespace

Journal::~Journal() { close(); }

std::string Journal::open(const std::string& path, Registry& reg, int64_t now_ms, std::vector<std::string>& notes) {
  path_ = path;
  std::map<Key, json> entries;
  uint64_t seq = 0;
  if (std::string e = read_snapshot(path, entries, seq, snapshot_bytes_, notes); !e.empty()) return e;
  // Journals from the snapshot's number on, in order, while they exist.
  uint64_t last = seq;
  for (uint64_t k = seq;; ++k) {
    const std::string file = journal_path(path, k);
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) break;
    uint64_t good = 0;
    bool torn = false;
    if (std::string e = replay_journal(file, entries, good, torn); !e.empty()) return e;
    if (torn) {
      // Cut the unfinished record off, so appends continue after the last whole one.
      if (::truncate(file.c_str(), static_cast<off_t>(good)) != 0) return errno_msg("cannot truncate", file);
      notes.push_back("registry journal " + file + ": an unfinished last record (never acknowledged) was dropped");
    }
    last = k;
  }
  for (const auto& [key, e] : entries) {
    Registration r;
    Error err;
    decode_registration(e, r, DocKind::kStored, err);  // checked when read
    reg.restore(r, now_ms);
  }
  reg.changed();
  return open_for_append(last);
}

std::string Journal::open_for_append(uint64_t seq) {
  const std::string file = journal_path(path_, seq);
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return errno_msg("cannot open registry journal", file);
  struct stat st {};
  ::fstat(fd, &st);
  sync_dir(file);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  seq_ = seq;
  bytes_ = static_cast<uint64_t>(st.st_size);
  if (!syncer_.joinable()) {
    stop_ = false;
    syncer_ = std::thread([this] { sync_loop(); });
  }
  return "";
}

uint64_t Journal::write_async(const Registry& reg, const Keys& changed) {
  const uint64_t ticket = ++next_ticket_;
  Keys keys = changed;
  for (const auto& k : retry_)
    if (std::find(changed.begin(), changed.end(), k) == changed.end()) keys.push_back(k);
  retry_.clear();
  Job job;
  job.ticket = ticket;
  job.fd = fd_;
  for (const auto& [service, id] : keys) {
    const Instance* inst = reg.find(service, id);
    if (inst && inst->source == Source::kDynamic)
      job.data += json{{"put", encode_registration(registration_of(*inst), DocKind::kStored)}}.dump();
    else
      job.data += json{{"del", {{"service", service}, {"id", id}}}}.dump();
    job.data += '\n';
  }
  keys_of_[ticket] = std::move(keys);
  ++in_flight_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return ticket;
}

std::vector<std::pair<uint64_t, std::string>> Journal::take_synced() {
  std::vector<Done> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done.swap(done_);
  }
  std::vector<std::pair<uint64_t, std::string>> out;
  for (auto& d : done) {
    --in_flight_;
    auto it = keys_of_.find(d.ticket);
    if (!d.error.empty() && it != keys_of_.end()) retry_.insert(it->second.begin(), it->second.end());
    if (it != keys_of_.end()) keys_of_.erase(it);
    if (d.error.empty()) bytes_ += d.bytes;
    out.emplace_back(d.ticket, std::move(d.error));
  }
  // A key a later write covered is on disk in its latest state, whatever an earlier failure was.
  for (const auto& [t, keys] : keys_of_)
    for (const auto& k : keys) retry_.erase(k);
  return out;
}

std::string Journal::write(const Registry& reg, const Keys& keys) {
  if (fd_ < 0 || (keys.empty() && retry_.empty())) return "";
  const uint64_t ticket = write_async(reg, keys);
  std::string err;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return std::any_of(done_.begin(), done_.end(), [&](const Done& d) { return d.ticket == ticket; }); });
    }
    for (auto& [t, e] : take_synced())
      if (t == ticket) return e;
  }
}

void Journal::sync_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_, and every queued write done
    std::deque<Job> jobs;
    jobs.swap(queue_);
    lock.unlock();
    // Group commit: every turn queued meanwhile goes in one write and one fdatasync. Jobs are for
    // one file (a compaction switches files only while nothing is queued).
    std::string data;
    for (const auto& j : jobs) data += j.data;
    const int fd = jobs.front().fd;
    std::string err;
    if (torn_) {
      err = "the registry journal has an unfinished record that could not be cut off; restart to recover";
    } else {
      struct stat st {};
      const bool sized = ::fstat(fd, &st) == 0;
      if (!sized || !write_all(fd, data) || ::fdatasync(fd) != 0) {
        err = std::string("cannot write the registry journal: ") + std::strerror(errno);
        // Back to the last whole record, so later appends never bury a torn line (the next
        // start-up would refuse the journal as corrupt).
        if (!sized || ::ftruncate(fd, st.st_size) != 0 || ::fdatasync(fd) != 0) torn_ = true;
      }
    }
    lock.lock();
    for (const auto& j : jobs) done_.push_back({j.ticket, err, err.empty() ? j.data.size() : 0});
    cv_.notify_all();  // write() may be waiting
    lock.unlock();
    if (on_synced_) on_synced_();
    lock.lock();
  }
}

void Journal::maybe_compact(uint64_t index, const std::function<void(const std::string&)>& log) {
  if (compactor_.joinable() && !compacting_.load(std::memory_order_acquire)) {
    compactor_.join();
    if (compact_result_.empty()) {
      snapshot_bytes_ = compact_snapshot_bytes_;
      log("registry snapshot compacted: " + std::to_string(snapshot_bytes_) + " bytes, journal " + std::to_string(seq_));
    } else {
      log("registry compaction failed (the journals keep everything; retried later): " + compact_result_);
    }
  }
  // Not while writes are queued: they are for the journal being merged, and the file switches.
  if (fd_ < 0 || compactor_.joinable() || in_flight_ > 0 || bytes_ < compact_bytes_ || bytes_ < snapshot_bytes_) return;
  // Appends move to the next journal now; the thread merges everything before it.
  const uint64_t upto = seq_;
  if (std::string e = open_for_append(seq_ + 1); !e.empty()) {
    log("registry compaction not started: " + e);
    return;
  }
  compacting_.store(true, std::memory_order_release);
  compactor_ = std::thread([this, upto, index, path = path_] {
    // Behind the proxy's loops for the CPU: compaction can wait, traffic cannot.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
    std::map<Key, std::string> entries;
    uint64_t seq = 0;
    std::string e = read_snapshot_text(path, entries, seq);
    for (uint64_t k = seq; e.empty() && k <= upto; ++k) {
      struct stat st {};
      if (::stat(journal_path(path, k).c_str(), &st) != 0) continue;
      e = replay_journal_text(journal_path(path, k), entries);
    }
    std::string data;
    if (e.empty()) {
      data = encode_snapshot(entries, index, upto + 1);
      e = write_durably(path, data);
    }
    if (e.empty()) {
      for (uint64_t k = seq; k <= upto; ++k) ::unlink(journal_path(path, k).c_str());
      compact_snapshot_bytes_ = data.size();
    }
    compact_result_ = e;
    compacting_.store(false, std::memory_order_release);
  });
}

void Journal::close() {
  if (syncer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    syncer_.join();
  }
  if (compactor_.joinable()) compactor_.join();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::string write_snapshot(const Registry& reg, const std::string& path, uint64_t seq) {
  std::map<Key, std::string> entries;
  for (const auto& [name, svc] : reg.services())
    for (const auto& [id, inst] : svc.instances)
      if (inst.source == Source::kDynamic)
        entries[{name, id}] = encode_registration(registration_of(inst), DocKind::kStored).dump();
  return write_durably(path, encode_snapshot(entries, reg.index(), seq));
}

}  // namespace sy::registry
