// The registry model: index, leases and mass expiry, drain, per-service indexes, deregister_critical_after.
#include <doctest.h>

#include <set>
#include <vector>

#include "registry/registry.h"

using namespace sy::registry;
using sy::conf::Millis;

namespace {
Registration reg(const std::string& svc, const std::string& id, int port, Millis ttl = Millis(1000)) {
  Registration r;
  r.service = svc;
  r.id = id;
  sy::conf::parse_address("127.0.0.1:" + std::to_string(port), r.address, false);
  r.ttl = ttl;
  return r;
}
}  // namespace

TEST_CASE("put, update, heartbeat, drain, remove bump the index") {
  Registry r;
  int changes = 0;
  r.set_listener([&](const std::string*) { ++changes; });
  uint64_t i0 = r.index();
  CHECK(r.put(reg("a", "1", 9001), 0) == Registry::PutResult::kCreated);
  CHECK(r.put(reg("a", "1", 9002), 0) == Registry::PutResult::kUpdated);
  CHECK(r.index() == i0 + 2);
  // Registering again what is registered changes nothing (no index, no change, no write) and
  // renews the lease, as a heartbeat does.
  (void)r.take_persist_dirty();
  (void)r.take_dirty();
  CHECK(r.put(reg("a", "1", 9002), 400) == Registry::PutResult::kUpdated);
  CHECK(r.index() == i0 + 2);
  CHECK(r.take_persist_dirty().empty());
  CHECK(r.take_dirty().services.empty());
  CHECK(r.find("a", "1")->lease_expires_ms == 1400);
  CHECK(changes == 2);
  CHECK(r.heartbeat("a", "1", 500));
  CHECK_FALSE(r.heartbeat("a", "2", 500));
  CHECK(r.set_drain("a", "1", true));
  CHECK(std::string(r.find("a", "1")->state_name()) == "draining");
  CHECK(r.remove("a", "1"));
  CHECK_FALSE(r.remove("a", "1"));
  CHECK(r.services().count("a") == 0);  // a registry-only service leaves with its last instance
  CHECK(changes == 4);
}

TEST_CASE("a registration never takes over a config-file instance") {
  Registry r;
  sy::conf::Config c;
  std::vector<std::string> e;
  REQUIRE(sy::conf::load_string("services:\n  a:\n    instances:\n      - { address: 127.0.0.1:9001, id: s1 }\n", "t.yaml", c, e));
  r.apply_config(c);
  const uint64_t i0 = r.index();
  CHECK(r.put(reg("a", "s1", 9002), 0) == Registry::PutResult::kStatic);
  CHECK(r.index() == i0);
  CHECK(r.find("a", "s1")->source == Source::kStatic);
  CHECK(r.find("a", "s1")->address.text == "127.0.0.1:9001");
  CHECK(r.take_persist_dirty().empty());
  r.restore(reg("a", "s1", 9003), 0);  // a journal written before the rule: the file wins
  CHECK(r.find("a", "s1")->address.text == "127.0.0.1:9001");
}

TEST_CASE("a change marks its instance; a config change marks every instance") {
  Registry r;
  r.put(reg("a", "1", 9001), 0);
  r.put(reg("a", "2", 9002), 0);
  auto d = r.take_dirty();
  CHECK(d.services == std::set<std::string>{"a"});
  CHECK_FALSE(d.whole_service("a"));
  CHECK(d.ids("a") == std::set<std::string>{"1", "2"});
  r.set_drain("a", "2", true);
  r.remove("a", "1");
  d = r.take_dirty();
  CHECK(d.ids("a") == std::set<std::string>{"1", "2"});
  r.apply_config(sy::conf::Config{});
  d = r.take_dirty();
  CHECK(d.all);
  CHECK(d.whole_service("a"));
}

TEST_CASE("a single lease expiry removes the instance") {
  Registry r;
  r.put(reg("a", "1", 9001), 0);
  r.put(reg("a", "2", 9002), 0);
  r.put(reg("a", "3", 9003), 0);
  r.heartbeat("a", "2", 900);
  r.heartbeat("a", "3", 900);
  r.expire(1000);
  CHECK(r.find("a", "1") == nullptr);
  CHECK(r.find("a", "2") != nullptr);
}

TEST_CASE("a mass expiry keeps the instances as stale until they heartbeat") {
  Registry r;
  for (int i = 0; i < 4; ++i) r.put(reg("a", std::to_string(i), 9000 + i), 0);
  r.expire(1000);  // all four at once: a partition, not four deaths
  for (int i = 0; i < 4; ++i) {
    const Instance* inst = r.find("a", std::to_string(i));
    REQUIRE(inst != nullptr);
    CHECK(inst->stale);
    CHECK(std::string(inst->state_name()) == "stale");
  }
  CHECK(r.heartbeat("a", "2", 1100));
  CHECK_FALSE(r.find("a", "2")->stale);
}

TEST_CASE("config instances are static and survive dynamic churn") {
  sy::conf::Config c;
  sy::conf::Service s = sy::conf::default_service("web");
  sy::conf::StaticInstance si;
  sy::conf::parse_address("127.0.0.1:9100", si.address, false);
  si.id = "w1";
  s.instances.push_back(si);
  c.services["web"] = s;
  Registry r;
  auto changes = r.apply_config(c);
  CHECK(changes.size() == 2);
  CHECK(r.find("web", "w1")->source == Source::kStatic);
  r.put(reg("web", "d1", 9101), 0);
  c.services["web"].instances.clear();
  r.apply_config(c);
  CHECK(r.find("web", "w1") == nullptr);
  CHECK(r.find("web", "d1") != nullptr);
}

TEST_CASE("limits") {
  Registry r;
  r.set_limits({2, 3});
  CHECK(r.put(reg("a", "1", 1), 0) == Registry::PutResult::kCreated);
  CHECK(r.put(reg("a", "2", 2), 0) == Registry::PutResult::kCreated);
  CHECK(r.put(reg("a", "3", 3), 0) == Registry::PutResult::kServiceFull);
  CHECK(r.put(reg("b", "1", 4), 0) == Registry::PutResult::kCreated);
  CHECK(r.put(reg("c", "1", 5), 0) == Registry::PutResult::kRegistryFull);
  CHECK(r.put(reg("a", "1", 1), 0) == Registry::PutResult::kUpdated);  // updates always pass
}

TEST_CASE("a mass expiry is seen even when the leases run out a few ms apart") {
  Registry r;
  for (int i = 0; i < 4; ++i) r.put(reg("a", std::to_string(i), 9000 + i), i * 5);
  r.expire(1001);  // only lease 0 is due; the other three are silent and about to follow
  REQUIRE(r.find("a", "0") != nullptr);
  CHECK(r.find("a", "0")->stale);
  r.expire(1100);
  for (int i = 0; i < 4; ++i) CHECK(r.find("a", std::to_string(i))->stale);
}

TEST_CASE("each service has its own index; the listener names the service that changed") {
  Registry r;
  std::vector<std::string> told;
  r.set_listener([&](const std::string* s) { told.push_back(s ? *s : "*"); });
  r.put(reg("a", "1", 9001), 0);
  const uint64_t a1 = r.service_index("a");
  r.put(reg("b", "1", 9002), 0);
  CHECK(r.service_index("a") == a1);  // b's change leaves a's index alone
  CHECK(r.service_index("b") > a1);
  r.remove("a", "1");
  CHECK(r.service_index("a") > a1);  // still answered for a service that is gone
  CHECK(told == std::vector<std::string>{"a", "b", "a"});
  CHECK(r.service_index("never") >= 1);
}

TEST_CASE("find_by_id finds dynamic instances in any service and forgets removed ones") {
  Registry r;
  r.put(reg("a", "x", 9001), 0);
  r.put(reg("b", "x", 9002), 0);
  CHECK(r.find_by_id("x").size() == 2);
  r.remove("a", "x");
  REQUIRE(r.find_by_id("x").size() == 1);
  CHECK(r.find_by_id("x")[0]->service == "b");
  r.expire(5000);  // its lease ran out
  CHECK(r.find_by_id("x").empty());
}

TEST_CASE("deregister_critical_after removes an instance unhealthy that long, and only that") {
  Registry r;
  int64_t now = 0;
  r.set_clock([&] { return now; });
  Registration a = reg("a", "1", 9001, Millis(0));
  a.leased = false;
  a.deregister_critical_after = Millis(2000);
  r.put(a, 0);
  Registration b = reg("a", "2", 9002, Millis(0));
  b.leased = false;
  r.put(b, 0);
  now = 100;
  r.set_reported_health("a", "1", Health::kUnhealthy, false, "check failed");
  r.set_reported_health("a", "2", Health::kUnhealthy, false, "check failed");
  now = 1500;
  r.set_reported_health("a", "1", Health::kHealthy, true, "recovered, warning");  // the clock restarts
  CHECK(r.find("a", "1")->warning);
  r.set_reported_health("a", "1", Health::kUnhealthy, false, "failed again");
  r.reap_critical(3000);
  CHECK(r.find("a", "1") != nullptr);  // unhealthy since 1500: not 2 s yet
  r.reap_critical(3500);
  CHECK(r.find("a", "1") == nullptr);
  CHECK(r.find("a", "2") != nullptr);  // not opted in
}

// ---- shared registry (registry.backend: etcd) ----

TEST_CASE("shared: changes the store reports are applied without being written back") {
  Registry r;
  r.set_shared(true);
  Registration a = reg("s", "1", 9001);
  CHECK(r.apply_remote(a, 77, 0));
  CHECK(r.take_persist_dirty().empty());
  CHECK(r.find("s", "1")->shared_lease == 77);
  const uint64_t idx = r.index();
  // The same document again (this proxy's own write coming back through the watch): nothing changes.
  CHECK_FALSE(r.apply_remote(a, 78, 0));
  CHECK(r.index() == idx);
  CHECK(r.find("s", "1")->shared_lease == 78);
  // A drain carried in the stored document is applied.
  a.draining = true;
  CHECK(r.apply_remote(a, 78, 0));
  CHECK(r.find("s", "1")->draining);
  CHECK(r.remove_remote("s", "1"));
  CHECK(r.take_persist_dirty().empty());
  CHECK(r.find("s", "1") == nullptr);
  // Local changes are still marked for writing.
  r.put(reg("s", "2", 9002), 0);
  CHECK(r.take_persist_dirty().size() == 1);
}

TEST_CASE("shared: leases run in the store; heartbeats ask for renewals") {
  Registry r;
  r.set_shared(true);
  r.apply_remote(reg("s", "1", 9001, Millis(1000)), 5, 0);
  CHECK(r.expire(10000) == -1);  // nothing expires locally
  CHECK(r.find("s", "1") != nullptr);
  CHECK(r.heartbeat("s", "1", 100));
  auto renewals = r.take_renewals();
  REQUIRE(renewals.size() == 1);
  CHECK(renewals[0] == 5);
  CHECK(r.take_renewals().empty());
}

TEST_CASE("shared: one lease lost is removed; most of a service lost at once is kept stale, earlier ones too") {
  Registry r;
  r.set_shared(true);
  r.set_default_ttl(Millis(30000));
  for (int i = 0; i < 4; ++i) r.apply_remote(reg("s", std::to_string(i), 9000 + i), 1, 0);
  r.lease_lost("s", "0", 100);
  CHECK(r.find("s", "0") == nullptr);  // one of four: the service may just have lost one
  r.lease_lost("s", "1", 110);
  CHECK(r.find("s", "1") == nullptr);  // two of four: not more than half yet
  r.lease_lost("s", "2", 120);         // three of four: a partition, not deaths
  REQUIRE(r.find("s", "2") != nullptr);
  CHECK(r.find("s", "2")->stale);
  REQUIRE(r.find("s", "0") != nullptr);  // brought back
  CHECK(r.find("s", "0")->stale);
  REQUIRE(r.find("s", "1") != nullptr);
  CHECK(r.find("s", "1")->stale);
  r.lease_lost("s", "3", 130);
  CHECK(r.find("s", "3")->stale);
  CHECK(r.take_persist_dirty().empty());
  // A stale instance's heartbeat asks the store for a lease that is gone (-1: answered 404).
  r.heartbeat("s", "3", 200);
  CHECK(r.take_renewals() == std::vector<int64_t>{-1});
  // Registering again (through any proxy) makes it fresh.
  CHECK(r.apply_remote(reg("s", "3", 9003), 9, 300));
  CHECK_FALSE(r.find("s", "3")->stale);
}

TEST_CASE("changes from the shared store are applied, routed and never written back; local ones are") {
  Registry r;
  r.set_shared(true);
  CHECK(r.apply_remote(reg("s", "a", 1001), 77, 0));
  CHECK_FALSE(r.apply_remote(reg("s", "a", 1001), 77, 0));  // the echo of what it holds: nothing
  Registration drained = reg("s", "b", 1002);
  drained.draining = true;
  CHECK(r.apply_remote(drained, 78, 0));
  REQUIRE(r.find("s", "b"));
  CHECK(r.find("s", "b")->draining);
  CHECK(r.find("s", "a")->shared_lease == 77);
  CHECK(r.take_persist_dirty().empty());  // the store has them: nothing to write
  auto dirty = r.take_dirty();
  CHECK(dirty.ids("s") == std::set<std::string>{"a", "b"});
  CHECK(r.remove_remote("s", "a"));
  CHECK(r.take_persist_dirty().empty());
  r.put(reg("s", "c", 1003), 0);  // a local registration goes to the store
  r.set_shared_lease("s", "c", 99);
  CHECK(r.find("s", "c")->shared_lease == 99);
  CHECK(r.take_persist_dirty() == std::vector<std::pair<std::string, std::string>>{{"s", "c"}});
}

TEST_CASE("lease expiry goes through changed(): the index moves and the expired ids are marked") {
  Registry r;
  for (int i = 0; i < 4; ++i) r.put(reg("s", "i" + std::to_string(i), 2000 + i, Millis(1000)), 0);
  r.put(reg("s", "keep", 2010, Millis(100000)), 0);
  (void)r.take_dirty();
  (void)r.take_persist_dirty();
  const uint64_t before = r.index();
  // One expires alone (not a mass expiry): removed, marked, persisted.
  r.heartbeat("s", "i1", 600);
  r.heartbeat("s", "i2", 600);
  r.heartbeat("s", "i3", 600);
  r.expire(1001);
  CHECK(r.find("s", "i0") == nullptr);
  CHECK(r.index() > before);
  CHECK(r.service_index("s") == r.index());
  auto dirty = r.take_dirty();
  CHECK(dirty.ids("s").count("i0") == 1);
  CHECK(r.take_persist_dirty() == std::vector<std::pair<std::string, std::string>>{{"s", "i0"}});
}
