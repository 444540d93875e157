// The routing snapshot: route order, host normalisation, which instances are routable.
#include <doctest.h>

#include <set>

#include "proxy/server/routing_table.h"

using namespace sy;

namespace {
conf::Config config_with_routes() {
  conf::Config c;
  std::vector<std::string> e;
  conf::load_string(R"(
routes:
  - { match: { path_prefix: /api }, service: any-api }
  - { match: { host: shop.example, path_prefix: /api }, service: shop-api, strip_prefix: true }
  - { match: { host: shop.example }, service: shop }
  - { match: { host: shop.example, path_prefix: /api/v2 }, service: shop-v2 }
services:
  shop: { instances: [{ address: 127.0.0.1:1 }] }
  shop-api: { instances: [{ address: 127.0.0.1:2 }] }
  shop-v2: { instances: [{ address: 127.0.0.1:3 }] }
  any-api: { instances: [{ address: 127.0.0.1:4 }] }
  plain: { instances: [{ address: 127.0.0.1:5 }] }
)", "t.yaml", c, e);
  REQUIRE(e.empty());
  return c;
}
}  // namespace

TEST_CASE("most specific route wins: exact host, then longest prefix") {
  auto c = config_with_routes();
  registry::Registry r;
  r.apply_config(c);
  auto t = server::build_routing_table(r, c);
  const server::RouteEntry* route;
  const server::Upstreams* ups;
  auto svc = [&](std::string_view host, std::string_view path) -> std::string {
    if (!t->route(host, path, route, ups)) return "404";
    return ups ? ups->service : "null";
  };
  CHECK(svc("shop.example", "/api/v2/x") == "shop-v2");
  CHECK(svc("shop.example", "/api/orders") == "shop-api");
  CHECK(svc("shop.example", "/apix") == "shop");
  CHECK(svc("shop.example", "/") == "shop");
  CHECK(svc("other", "/api/x") == "any-api");
  CHECK(svc("plain", "/anything") == "plain");
  CHECK(svc("nothing", "/") == "404");
}

TEST_CASE("host normalisation") {
  CHECK(http::normalize_host("Shop.Example:8080") == "shop.example");
  CHECK(http::normalize_host("svc.") == "svc");
  CHECK(http::normalize_host("[::1]:80") == "[::1]");
}

TEST_CASE("draining and unhealthy instances are not routable; unknown only as fallback") {
  conf::Config c;
  registry::Registry r;
  registry::Registration a;
  a.service = "s";
  a.id = "a";
  conf::parse_address("127.0.0.1:1", a.address, false);
  registry::Registration b = a;
  b.id = "b";
  conf::parse_address("127.0.0.1:2", b.address, false);
  r.put(a, 0);
  r.put(b, 0);
  r.set_drain("s", "a", true);
  auto t = server::build_routing_table(r, c);
  REQUIRE(t->services.at("s")->endpoints.size() == 1);
  CHECK(t->services.at("s")->endpoints[0]->id == "b");
  r.set_health("s", "b", registry::Health::kUnknown, "not probed");
  r.set_drain("s", "a", false);
  t = server::build_routing_table(r, c);
  REQUIRE(t->services.at("s")->endpoints.size() == 1);
  CHECK(t->services.at("s")->endpoints[0]->id == "a");  // healthy beats unknown
}

// The builder patches tiers per changed instance: after any sequence of changes the snapshot it
// publishes routes to exactly what a snapshot built from scratch does (the same endpoints, the
// same panic verdict), for the patched policies and for the rebuilt ones.
TEST_CASE("routing builder: patched snapshots equal snapshots built from scratch, change after change") {
  const char* lbs[] = {"round_robin", "least_request", "maglev", "random", "ewma", "round_robin"};
  for (size_t li = 0; li < 6; ++li) {
    const char* lb = lbs[li];
    const bool uniform = li % 2 == 0;  // equal weights: policies over the list itself
    CAPTURE(lb);
    CAPTURE(uniform);
    conf::Config c;
    std::vector<std::string> e;
    conf::load_string(std::string("services:\n  s: { lb: ") + lb + " }\n  t: {}\n", "t.yaml", c, e);
    REQUIRE(e.empty());
    registry::Registry r;
    r.apply_config(c);
    server::RoutingBuilder builder;
    std::shared_ptr<const server::RoutingTable> prev = builder.build(r, c, nullptr, nullptr, nullptr, 0);
    r.take_dirty();
    uint64_t rng = 7;
    auto next = [&](uint64_t n) { return ((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 33) % n; };
    for (int step = 0; step < 600; ++step) {
      const std::string svc = next(4) == 0 ? "t" : "s";
      const std::string id = "i" + std::to_string(next(24));
      switch (next(7)) {
        case 0:
        case 1: {  // register, or update with a new address or weight
          registry::Registration g;
          g.service = svc;
          g.id = id;
          conf::parse_address("127.0.0.1:" + std::to_string(1000 + next(3)), g.address, false);
          g.weight = uniform ? 1 : static_cast<uint32_t>(1 + next(3));
          r.put(g, 0);
          break;
        }
        case 2: r.remove(svc, id); break;
        case 3: r.set_drain(svc, id, next(2) == 0); break;
        case 4: r.set_health(svc, id, next(2) == 0 ? registry::Health::kHealthy : registry::Health::kUnhealthy, "probe"); break;
        case 5: r.set_health(svc, id, registry::Health::kUnknown, "not probed"); break;
        case 6: r.set_ejected(svc, id, next(2) == 0, 0, 1); break;
      }
      if (next(3) != 0) continue;  // several changes per publish, as in one loop turn
      auto dirty = r.take_dirty();
      auto patched = builder.build(r, c, prev.get(), &dirty, nullptr, 0);
      auto scratch = server::build_routing_table(r, c);
      for (const auto& entry : scratch->services) {
        const std::string& name = entry.first;  // (clang 14 cannot capture a structured binding)
        const auto& ups = entry.second;
        CAPTURE(name);
        CAPTURE(step);
        const auto& got = *patched->services.at(name);
        std::multiset<std::pair<uint64_t, uint32_t>> want_set, got_set;
        for (size_t k = 0; k < ups->endpoints.size(); ++k) want_set.insert({ups->endpoints[k]->uid, ups->endpoints[k]->weight});
        for (size_t k = 0; k < got.endpoints.size(); ++k) got_set.insert({got.endpoints[k]->uid, got.endpoints[k]->weight});
        CHECK(want_set == got_set);
        CHECK(got.panic == ups->panic);
        CHECK(got.has_instances == ups->has_instances);
        // Every endpoint the policy can pick is one of them.
        lb::PickContext ctx;
        for (int k = 0; k < 8 && !got.endpoints.empty(); ++k) {
          ctx.random = next(1u << 30);
          const int i = got.pick(ctx);
          CHECK((i >= 0 && static_cast<size_t>(i) < got.endpoints.size()));
        }
      }
      prev = patched;
    }
  }
}

TEST_CASE("routing builder: an unchanged instance keeps its endpoint object across publishes") {
  conf::Config c;
  registry::Registry r;
  registry::Registration g;
  g.service = "s";
  for (int i = 0; i < 3; ++i) {
    g.id = "i" + std::to_string(i);
    conf::parse_address("127.0.0.1:" + std::to_string(2000 + i), g.address, false);
    r.put(g, 0);
  }
  server::RoutingBuilder builder;
  auto dirty = r.take_dirty();
  std::shared_ptr<const server::RoutingTable> t1 = builder.build(r, c, nullptr, &dirty, nullptr, 0);
  conf::parse_address("127.0.0.1:2999", g.address, false);  // i2 moves: a new endpoint
  r.put(g, 0);
  dirty = r.take_dirty();
  auto t2 = builder.build(r, c, t1.get(), &dirty, nullptr, 0);
  auto find = [](const server::RoutingTable& t, const std::string& id) {
    const auto& eps = t.services.at("s")->endpoints;
    for (size_t k = 0; k < eps.size(); ++k)
      if (eps[k]->id == id) return eps[k].get();
    return static_cast<const server::Endpoint*>(nullptr);
  };
  CHECK(find(*t1, "i0") == find(*t2, "i0"));
  CHECK(find(*t1, "i1") == find(*t2, "i1"));
  REQUIRE(find(*t2, "i2") != nullptr);
  CHECK(find(*t1, "i2") != find(*t2, "i2"));
  CHECK(find(*t2, "i2")->address.port() == 2999);
}

TEST_CASE("endpoint list: a published copy never changes; the builder copies only the chunks it writes") {
  server::EndpointList list;
  std::vector<std::shared_ptr<const server::Endpoint>> eps;
  for (uint64_t i = 0; i < 200; ++i) {
    eps.push_back(std::make_shared<const server::Endpoint>(server::Endpoint{i, "e" + std::to_string(i), {}, 1, nullptr}));
    list.push_back(eps.back());
  }
  const server::EndpointList snap = list.published();
  list.set(3, eps[150]);     // chunk 0
  list.set(5, list.back());  // chunk 0 again: copied once
  list.pop_back();           // chunk 3 (199 → 198)
  list.push_back(eps[7]);
  REQUIRE(snap.size() == 200);
  for (uint64_t i = 0; i < 200; ++i) CHECK(snap[i]->uid == i);  // untouched
  CHECK(list.size() == 200);
  CHECK(list[3]->uid == 150);
  CHECK(list[5]->uid == 199);
  CHECK(list[199]->uid == 7);
  CHECK(&list[64] == &snap[64]);  // chunks 1 and 2 are still shared, not copied
  CHECK(&list[3] != &snap[3]);
  for (int i = 0; i < 200; ++i) list.pop_back();
  CHECK(list.empty());
  CHECK(snap[199]->uid == 199);
}

TEST_CASE("routing builder: a big Maglev service rebuilds its table at most once per 100 ms; a small one at once") {
  conf::Config c;
  std::vector<std::string> e;
  conf::load_string("services:\n  big: { lb: maglev }\n  small: { lb: maglev }\n", "t.yaml", c, e);
  REQUIRE(e.empty());
  registry::Registry r;
  r.apply_config(c);
  registry::Registration g;
  auto add = [&](const std::string& svc, int i) {
    g.service = svc;
    g.id = "i" + std::to_string(i);
    conf::parse_address("127.0.0.1:" + std::to_string(1000 + i % 50000), g.address, false);
    r.put(g, 0);
  };
  for (size_t i = 0; i < server::RoutingBuilder::kThrottleFrom; ++i) add("big", static_cast<int>(i));
  add("small", 1);
  server::RoutingBuilder b;
  auto d = r.take_dirty();
  std::shared_ptr<const server::RoutingTable> t = b.build(r, c, nullptr, &d, nullptr, 1000);
  d = r.take_dirty();
  t = b.build(r, c, t.get(), &d, nullptr, 1000);  // (the first incremental build records the time)
  const size_t n = t->services.at("big")->endpoints.size();
  add("big", 5000);
  add("small", 2);
  d = r.take_dirty();
  t = b.build(r, c, t.get(), &d, nullptr, 1050);
  CHECK(b.pending());
  CHECK(t->services.at("big")->endpoints.size() == n);       // not yet
  CHECK(t->services.at("small")->endpoints.size() == 2);     // small: at once
  d = r.take_dirty();
  t = b.build(r, c, t.get(), &d, nullptr, 1099);
  CHECK(b.pending());
  d = r.take_dirty();
  t = b.build(r, c, t.get(), &d, nullptr, 1100);             // nothing new changed; 100 ms passed
  CHECK_FALSE(b.pending());
  CHECK(t->services.at("big")->endpoints.size() == n + 1);
  b.set_throttle(false);  // shutdown: at once
  add("big", 5001);
  d = r.take_dirty();
  t = b.build(r, c, t.get(), &d, nullptr, 1101);
  CHECK_FALSE(b.pending());
  CHECK(t->services.at("big")->endpoints.size() == n + 2);
}
