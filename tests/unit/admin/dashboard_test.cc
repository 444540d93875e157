// The dashboard's pure parts: the subject of an event sentence, the event history (ids, JSON), and
// the traffic window's rates and quantiles (Prometheus's histogram_quantile over bucket deltas).
#include <doctest.h>

#include <nlohmann/json.hpp>

#include "proxy/admin/dashboard.h"
#include "proxy/admin/events.h"

using namespace sy::admin;

TEST_CASE("an event's subject is the service/instance its sentence names") {
  CHECK(event_subject("instance registered: orders/o-1 at 127.0.0.1:8001") == std::pair<std::string, std::string>{"orders", "o-1"});
  CHECK(event_subject("health check: web/127.0.0.1:18555 is unhealthy (probe connect-failure)") ==
        std::pair<std::string, std::string>{"web", "127.0.0.1:18555"});
  CHECK(event_subject("circuit breaker open: pay/p1 after 5 failures") == std::pair<std::string, std::string>{"pay", "p1"});
  // A label before the subject ("shared registry: ...") is skipped once.
  CHECK(event_subject("shared registry: a.b/c is a static instance here") == std::pair<std::string, std::string>{"a.b", "c"});
  CHECK(event_subject("config reloaded from conf/switchyard.yaml").first.empty());
  CHECK(event_subject("panic routing: web has no healthy instance").first.empty());
  CHECK(event_subject("").first.empty());
}

TEST_CASE("events get consecutive ids from the start time, and the history keeps the last 1,000") {
  EventStream s(1'700'000'000'000);
  const uint64_t first = s.publish("registry", "instance registered: a/1 at x", 5);
  CHECK(first == 1'700'000'000'000'000ull);
  for (int i = 0; i < 1500; ++i) s.publish("registry", "instance deregistered: a/" + std::to_string(i), 6);
  CHECK(s.last_id() == first + 1500);
  CHECK(s.encoded() == 1501);  // one encode per event (no watcher here, and none would add one)
  const auto j = nlohmann::json::parse(s.history_json(EventStream::kHistory));
  REQUIRE(j["events"].size() == EventStream::kHistory);
  CHECK(j["events"].front()["id"] == first + 501);
  CHECK(j["events"].back()["id"] == first + 1500);
  CHECK(j["events"].back()["service"] == "a");
  CHECK(j["events"].back()["instance"] == "1499");
  CHECK(nlohmann::json::parse(s.history_json(3))["events"].size() == 3);
}

TEST_CASE("quantiles interpolate within the bucket, as histogram_quantile does") {
  const std::vector<double> bounds{0.001, 0.01, 0.1};
  // 10 requests: 5 under 1 ms, 4 in 1-10 ms, 1 in 10-100 ms; cumulative with +Inf last.
  const std::vector<double> delta{5, 9, 10, 10};
  CHECK(TrafficWindow::quantile(0.5, bounds, delta) == doctest::Approx(0.001));
  CHECK(TrafficWindow::quantile(0.7, bounds, delta) == doctest::Approx(0.001 + 0.009 * 0.5));
  CHECK(TrafficWindow::quantile(0.99, bounds, delta) == doctest::Approx(0.01 + 0.09 * 0.9));
  CHECK(TrafficWindow::quantile(0.5, bounds, {0, 0, 0, 0}) == -1);
  CHECK(TrafficWindow::quantile(0.99, bounds, {0, 0, 0, 4}) == doctest::Approx(0.1));  // in +Inf: the last bound
}

TEST_CASE("the traffic window answers rates over the readings of the last minute") {
  TrafficWindow w;
  Metrics::Totals t0;
  t0.requests = 100;
  t0.errors = 10;
  w.add(0, t0);
  Metrics::Totals now = t0;
  CHECK(w.rates(500, now).is_null());  // under a second since the first reading: no rate yet
  now.requests = 300;
  now.errors = 30;
  auto r = w.rates(10'000, now);
  CHECK(r["req_s"].get<double>() == doctest::Approx(20.0));
  CHECK(r["err5xx_s"].get<double>() == doctest::Approx(2.0));
  // Readings every 5 s; after more than a minute the first one is no longer the base.
  for (int64_t t = 5000; t <= 80'000; t += 5000) {
    Metrics::Totals x;
    x.requests = 100 + static_cast<double>(t) / 100;  // 10 req/s
    w.add(t, x);
  }
  Metrics::Totals last;
  last.requests = 100 + 800;
  r = w.rates(80'000, last);
  CHECK(r["req_s"].get<double>() == doctest::Approx(10.0));
  CHECK(r["window_s"].get<double>() <= 65);
}
