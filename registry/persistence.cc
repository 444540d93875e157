// Registry snapshot file: JSON, atomic replace.
#include "registry/persistence.h"

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
  json doc;
  doc["version"] = 1;
  doc["index"] = r.index();
  json list = json::array();
  for (const auto& [name, svc] : r.services()) {
    for (const auto& [id, inst] : svc.instances) {
      if (inst.source != Source::kDynamic) continue;
      json j;
      j["service"] = name;
      j["id"] = id;
      j["address"] = inst.address.text;
      j["weight"] = inst.weight;
      j["tags"] = inst.tags;
      j["meta"] = inst.meta;
      j["zone"] = inst.zone;
      j["ttl_ms"] = inst.ttl.count();
      j["draining"] = inst.draining;
      json routes = json::array();
      for (const auto& rt : inst.routes)
        routes.push_back({{"host", rt.host}, {"path_prefix", rt.path_prefix}, {"strip_prefix", rt.strip_prefix}});
      j["routes"] = routes;
      if (inst.has_health_check) {
        const auto& h = inst.health_check;
        j["health_check"] = {{"type", h.type == conf::HealthCheck::Type::kTcp ? "tcp" : h.type == conf::HealthCheck::Type::kNone ? "none" : "http"},
                             {"path", h.path},
                             {"interval_ms", h.interval.count()},
                             {"timeout_ms", h.timeout.count()},
                             {"healthy_threshold", h.healthy_threshold},
                             {"unhealthy_threshold", h.unhealthy_threshold}};
      }
      list.push_back(j);
    }
  }
  doc["instances"] = list;
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
  if (!doc.is_object() || doc.value("version", 0) != 1 || !doc.contains("instances") || !doc["instances"].is_array())
    return "registry snapshot " + path + " is corrupt: expected {\"version\": 1, \"instances\": [...]}";
  size_t n = 0;
  for (const auto& j : doc["instances"]) {
    ++n;
    try {
      Registration reg;
      reg.service = j.at("service").get<std::string>();
      reg.id = j.at("id").get<std::string>();
      std::string e = conf::parse_address(j.at("address").get<std::string>(), reg.address, false);
      if (!e.empty()) throw std::runtime_error(e);
      reg.weight = j.value("weight", 1u);
      reg.tags = j.value("tags", std::vector<std::string>{});
      reg.meta = j.value("meta", std::map<std::string, std::string>{});
      reg.zone = j.value("zone", std::string());
      reg.ttl = conf::Millis(j.value("ttl_ms", int64_t{0}));
      reg.leased = reg.ttl.count() > 0;
      for (const auto& rt : j.value("routes", json::array()))
        reg.routes.push_back({rt.value("host", ""), rt.value("path_prefix", ""), rt.value("strip_prefix", false)});
      if (j.contains("health_check")) {
        const auto& h = j["health_check"];
        reg.has_health_check = true;
        std::string t = h.value("type", "http");
        reg.health_check.type = t == "tcp" ? conf::HealthCheck::Type::kTcp
                                : t == "none" ? conf::HealthCheck::Type::kNone
                                              : conf::HealthCheck::Type::kHttp;
        reg.health_check.path = h.value("path", "/health");
        reg.health_check.interval = conf::Millis(h.value("interval_ms", int64_t{5000}));
        reg.health_check.timeout = conf::Millis(h.value("timeout_ms", int64_t{1000}));
        reg.health_check.healthy_threshold = h.value("healthy_threshold", 2u);
        reg.health_check.unhealthy_threshold = h.value("unhealthy_threshold", 3u);
      }
      r.restore(reg, j.value("draining", false), now_ms);
    } catch (const std::exception& e) {
      return "registry snapshot " + path + " is corrupt: instance #" + std::to_string(n) + ": " + e.what();
    }
  }
  r.changed();
  return "";
}

}  // namespace sy::registry
