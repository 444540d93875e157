// Registry snapshot file: JSON, atomic replace.
#include "registry/persistence.h"

#include "registry/codec.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace sy::registry {

using nlohmann::json;

namespace {

std::string errno_msg(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// Version 2: each entry is a stored registration (registry/codec.h), the same document the admin
// API takes and shows. Version 1 (switchyard before 0.2) wrote its own shape with *_ms numbers.
constexpr int kSnapshotVersion = 2;

// A version-1 entry in the version-2 shape, so the one decoder reads both. (Version 1 did not
// keep a health check's host, expected_status or jitter: those get the defaults.)
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

bool write_all(int fd, const std::string& data) {
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

}  // namespace

std::string save_snapshot(const Registry& r, const std::string& path) {
  json list = json::array();
  for (const auto& [name, svc] : r.services())
    for (const auto& [id, inst] : svc.instances)
      if (inst.source == Source::kDynamic) list.push_back(encode_registration(registration_of(inst), DocKind::kStored));
  json doc = {{"version", kSnapshotVersion}, {"index", r.index()}, {"instances", std::move(list)}};
  std::string data = doc.dump() + "\n";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_msg("cannot create", tmp);
  if (!write_all(fd, data) || ::fsync(fd) != 0) {
    std::string e = errno_msg("cannot write", tmp);
    ::close(fd);
    return e;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_msg("cannot rename onto", path);
  // Make the rename itself durable.
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  if (dir.empty()) dir = "/";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return "";
}

std::string load_snapshot(Registry& r, const std::string& path, int64_t now_ms) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (errno == ENOENT) return "";
    return errno_msg("cannot read registry snapshot", path);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  json doc = json::parse(ss.str(), nullptr, false);
  if (doc.is_discarded()) return "registry snapshot " + path + " is corrupt: not valid JSON";
  const int version = doc.is_object() && doc.contains("version") && doc["version"].is_number_integer() ? doc["version"].get<int>() : 0;
  if (!doc.is_object() || (version != 1 && version != kSnapshotVersion) || !doc.contains("instances") || !doc["instances"].is_array())
    return "registry snapshot " + path + " is corrupt: expected {\"version\": " + std::to_string(kSnapshotVersion) +
           ", \"instances\": [...]}";
  size_t n = 0;
  for (const auto& j : doc["instances"]) {
    ++n;
    Registration reg;
    DecodeError err;
    if (!decode_registration(version == 1 ? from_version_1(j) : j, reg, DocKind::kStored, err))
      return "registry snapshot " + path + " is corrupt: instance #" + std::to_string(n) + ": " + err.message;
    r.restore(reg, now_ms);
  }
  r.changed();
  return "";
}

}  // namespace sy::registry
