// The journal: what is acknowledged is what the next start loads, whatever happened to the last
// write (cut short by a crash, or failed for a full disk), on real files.
#include <doctest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "registry/journal.h"

using namespace sy::registry;

namespace {
Registration reg(const std::string& id, size_t meta_bytes = 0) {
  Registration r;
  r.service = "s";
  r.id = id;
  sy::conf::parse_address("127.0.0.1:9001", r.address, false);
  r.ttl = sy::conf::Millis(60000);
  if (meta_bytes) r.meta["blob"] = std::string(meta_bytes, 'x');
  return r;
}

std::string temp_dir() {
  char tmpl[] = "/tmp/sy-journal-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Loads PATH into a fresh registry: the instance ids it holds, or an error.
std::string load(const std::string& path, std::set<std::string>& ids, std::vector<std::string>& notes) {
  Registry r;
  Journal j;
  std::string e = j.open(path, r, 0, notes);
  for (const auto& [name, svc] : r.services())
    for (const auto& [id, inst] : svc.instances) ids.insert(id);
  return e;
}
}  // namespace

TEST_CASE("a torn last record is dropped and cut off; appends go on after the last whole one") {
  const std::string dir = temp_dir(), path = dir + "/registry.json";
  {
    Registry r;
    Journal j;
    std::vector<std::string> notes;
    REQUIRE(j.open(path, r, 0, notes).empty());
    for (const char* id : {"a", "b"}) {
      r.put(reg(id), 0);
      CHECK(j.write(r, r.take_persist_dirty()).empty());
    }
  }
  {
    std::ofstream f(path + ".journal.0", std::ios::app | std::ios::binary);
    f << R"({"put":{"service":"s","id":"torn","addr)";  // power lost mid-write
  }
  std::set<std::string> ids;
  std::vector<std::string> notes;
  REQUIRE(load(path, ids, notes).empty());
  CHECK(ids == std::set<std::string>{"a", "b"});
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("unfinished last record") != std::string::npos);
  const std::string text = read_all(path + ".journal.0");
  CHECK(text.back() == '\n');
  CHECK(text.find("torn") == std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("a write that fails is cut back to the last whole record, and written again once it can be") {
  const std::string dir = temp_dir(), path = dir + "/registry.json", file = path + ".journal.0";
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of death past the limit
  rlimit saved{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
  {
    Registry r;
    Journal j;
    std::vector<std::string> notes;
    REQUIRE(j.open(path, r, 0, notes).empty());
    r.put(reg("a"), 0);
    REQUIRE(j.write(r, r.take_persist_dirty()).empty());
    const off_t whole = file_size(file);
    REQUIRE(whole > 0);
    // The disk "fills up" 100 bytes further on: a record of 1,000 bytes stops in its middle.
    rlimit lim = saved;
    lim.rlim_cur = static_cast<rlim_t>(whole + 100);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    r.put(reg("big", 1000), 0);
    const std::string err = j.write(r, r.take_persist_dirty());
    CHECK_FALSE(err.empty());
    CHECK(file_size(file) == whole);  // nothing torn left behind
    CHECK(j.has_failed_keys());
    // Later writes still fail while the disk is full, and leave the file whole too.
    r.put(reg("c"), 0);
    CHECK_FALSE(j.write(r, r.take_persist_dirty()).empty());
    CHECK(file_size(file) == whole);
    // Room again: the next write carries the failed keys with it.
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &saved) == 0);
    r.put(reg("d"), 0);
    CHECK(j.write(r, r.take_persist_dirty()).empty());
    CHECK_FALSE(j.has_failed_keys());
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  std::set<std::string> ids;
  std::vector<std::string> notes;
  REQUIRE(load(path, ids, notes).empty());
  CHECK(notes.empty());
  CHECK(ids == std::set<std::string>{"a", "big", "c", "d"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("writes run on the sync thread and come back in order") {
  const std::string dir = temp_dir(), path = dir + "/registry.json";
  Registry r;
  Journal j;
  std::vector<std::string> notes;
  REQUIRE(j.open(path, r, 0, notes).empty());
  std::atomic<int> woken{0};
  j.set_on_synced([&] { woken.fetch_add(1); });
  std::vector<uint64_t> tickets;
  for (int i = 0; i < 20; ++i) {
    r.put(reg("i" + std::to_string(i)), 0);
    tickets.push_back(j.write_async(r, r.take_persist_dirty()));
  }
  std::vector<uint64_t> back;
  for (int spins = 0; back.size() < tickets.size() && spins < 600000; ++spins) {
    for (auto& [t, e] : j.take_synced()) {
      CHECK(e.empty());
      back.push_back(t);
    }
    if (back.size() < tickets.size()) ::usleep(100);
  }
  CHECK(back == tickets);
  CHECK(woken.load() >= 1);
  j.close();
  std::set<std::string> ids;
  REQUIRE(load(path, ids, notes).empty());
  CHECK(ids.size() == 20);
  std::filesystem::remove_all(dir);
}
