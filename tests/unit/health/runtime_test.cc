// The health runtime follows the registry per changed instance: other instances' runtimes (their
// breakers, streaks and live load) are untouched by a change next to them.
#include <doctest.h>

#include "health/runtime.h"

using namespace sy;
using registry::Registration;
using registry::Registry;

namespace {
Registration reg(const std::string& svc, const std::string& id, int port) {
  Registration r;
  r.service = svc;
  r.id = id;
  conf::parse_address("127.0.0.1:" + std::to_string(port), r.address, false);
  r.ttl = conf::Millis(60000);
  return r;
}
}  // namespace

TEST_CASE("Runtime::sync creates, keeps, replaces and drops instance runtimes by what changed") {
  Registry r;
  health::Runtime::Hooks hooks;
  hooks.now_ms = [] { return int64_t{0}; };
  health::Runtime rt(r, hooks);
  for (int i = 0; i < 100; ++i) r.put(reg("big", "i" + std::to_string(i), 10000 + i), 0);
  auto d = r.take_dirty();
  rt.sync(&d);
  const uint64_t uid7 = r.find("big", "i7")->uid, uid8 = r.find("big", "i8")->uid;
  auto rt7 = rt.instance(uid7), rt8 = rt.instance(uid8);
  REQUIRE(rt7);
  REQUIRE(rt8);
  CHECK(rt7->id == "i7");
  CHECK(rt.service("big"));

  // A new address is a new endpoint: a new runtime; its neighbour keeps its own object.
  r.put(reg("big", "i7", 20007), 0);
  d = r.take_dirty();
  CHECK(d.ids("big") == std::set<std::string>{"i7"});
  rt.sync(&d);
  CHECK_FALSE(rt.instance(uid7));
  CHECK(rt.instance(r.find("big", "i7")->uid));
  CHECK(rt.instance(uid8) == rt8);

  // Removed: its runtime goes; the others stay.
  r.remove("big", "i8");
  d = r.take_dirty();
  rt.sync(&d);
  CHECK_FALSE(rt.instance(uid8));
  CHECK(rt.instance(r.find("big", "i9")->uid));

  // The last instance leaving takes the service runtime with it (nothing else holds it).
  Registry small;
  health::Runtime rt2(small, hooks);
  small.put(reg("one", "x", 9001), 0);
  d = small.take_dirty();
  rt2.sync(&d);
  CHECK(rt2.service("one"));
  small.remove("one", "x");
  d = small.take_dirty();
  rt2.sync(&d);
  CHECK_FALSE(rt2.service("one"));
}
