// The etcd client's pure helpers: base64 (keys and values on the JSON gateway), prefix ranges,
// watch messages, transaction planning, and how answers are classified.
#include <doctest.h>

#include "proxy/http/base64.h"
#include "registry/etcd/client.h"
#include "registry/etcd/txn.h"
#include "registry/etcd/watch.h"

using sy::http::base64_decode;
using sy::http::base64_encode;

TEST_CASE("base64 round-trips any bytes, with RFC 4648 padding") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("/switchyard/") == "L3N3aXRjaHlhcmQv");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n <= all.size(); n += 7) CHECK(base64_decode(base64_encode(all.substr(0, n))) == all.substr(0, n));
  CHECK(base64_decode("Zm9v!!!") == "foo");  // stops at the first byte outside the alphabet
}

TEST_CASE("prefix_end is the first key after every key with the prefix") {
  using sy::registry::etcd::prefix_end;
  CHECK(prefix_end("/switchyard/") == "/switchyard0");
  CHECK(prefix_end("a\xff") == "b");
  CHECK(prefix_end("\xff\xff") == std::string(1, '\0'));
}

TEST_CASE("watch messages: puts, deregistrations told from lease expiries, compaction, progress") {
  using namespace sy::registry::etcd;
  using nlohmann::json;
  auto b = [](const std::string& s) { return sy::http::base64_encode(s); };
  const std::string p = "/sy/";
  json msg = {{"header", {{"revision", "9"}}},
              {"events", json::array({
                  {{"kv", {{"key", b(p + "services/web/instances/w1")}, {"mod_revision", "8"}, {"value", b("{}")}, {"lease", "77"}}}},
                  {{"type", "DELETE"}, {"kv", {{"key", b(p + "services/web/instances/w2")}, {"mod_revision", "9"}}}},
                  {{"type", "DELETE"}, {"kv", {{"key", b(p + "services/web/instances/w3")}, {"mod_revision", "9"}}}},
                  {{"kv", {{"key", b(p + "deregistrations")}, {"mod_revision", "9"}, {"value", b("[\"/sy/services/web/instances/w2\"]")}}}},
                  {{"kv", {{"key", b(p + "other")}, {"mod_revision", "9"}}}},
                  {{"kv", "not an object"}},
              })}};
  WatchMessage m = decode_watch_message(msg, p);
  REQUIRE(m.changes.size() == 3);
  CHECK(m.changes[0].put);
  CHECK(m.changes[0].lease == 77);
  CHECK(m.changes[0].value == "{}");
  CHECK(m.changes[1].id == "w2");
  CHECK_FALSE(m.changes[1].expired);  // listed by the marker of its revision: deregistered
  CHECK(m.changes[2].id == "w3");
  CHECK(m.changes[2].expired);  // no marker names it: its lease ran out
  CHECK(m.deregistered.size() == 1);
  CHECK(m.last_revision == 9);

  m = decode_watch_message(json{{"canceled", true}, {"compact_revision", "5"}}, p);
  CHECK(m.canceled);
  CHECK(m.compact_revision == 5);
  m = decode_watch_message(json{{"header", {{"revision", "42"}}}}, p);
  CHECK(m.progress_revision == 42);
  m = decode_watch_message(json{{"header", {{"revision", "42"}}}, {"created", true}}, p);
  CHECK(m.progress_revision == 0);  // the creation's header is the store's revision, not progress
  m = decode_watch_message(json::array({1, 2}), p);
  CHECK(m.changes.empty());
  std::string s, id;
  CHECK(parse_instance_key(p, instance_key(p, "a.b", "x:1"), s, id));
  CHECK(s == "a.b");
  CHECK(id == "x:1");
  CHECK_FALSE(parse_instance_key(p, "/sy/services/bad name/instances/x", s, id));
}

TEST_CASE("transactions stay within etcd's limits: 100 operations, about 1 MiB; deletes carry the marker") {
  using namespace sy::registry::etcd;
  std::vector<TxnOp> ops;
  const std::string big(700 * 1024, 'x');
  for (int i = 0; i < 4; ++i) ops.push_back({"/sy/services/s/instances/big" + std::to_string(i), true, big, 1});
  for (int i = 0; i < 250; ++i) ops.push_back({"/sy/services/s/instances/small" + std::to_string(i), true, "{}", 0});
  ops.push_back({"/sy/services/s/instances/gone", false, "", 0});
  const auto txns = plan_transactions(ops, "/sy/deregistrations");
  size_t total = 0, with_marker = 0;
  for (const auto& t : txns) {
    const auto& ops_in = t["success"];
    CHECK(ops_in.size() <= 101);  // 100 and the marker
    CHECK(t.dump().size() < 1536 * 1024);  // etcd's default --max-request-bytes
    for (const auto& op : ops_in) {
      if (op.contains("request_put") && sy::http::base64_decode(op["request_put"]["key"].get<std::string>()) == "/sy/deregistrations") {
        ++with_marker;
        CHECK(sy::http::base64_decode(op["request_put"]["value"].get<std::string>()) == "[\"/sy/services/s/instances/gone\"]");
        continue;
      }
      ++total;
    }
  }
  CHECK(total == ops.size());
  CHECK(with_marker == 1);
  CHECK(txns.size() >= 6);  // four large ones alone (two would pass 1.5 MiB), 250 small in threes of 100
  CHECK(txns[0]["success"][0]["request_put"]["lease"] == "1");
}

TEST_CASE("etcd's answers are classified by gRPC code, not by their text") {
  using sy::registry::etcd::Client;
  sy::conf::Address from;
  sy::conf::parse_address("127.0.0.1:2379", from, false);
  auto r = Client::classify(400, R"({"error": "etcdserver: mvcc: required revision has been compacted", "code": 11})", "", from);
  CHECK_FALSE(r.ok);
  CHECK(r.compacted());
  CHECK_FALSE(r.unavailable);
  // The same words under another code are not a compaction; a code says it whatever the words.
  r = Client::classify(400, R"({"error": "key compacted away? no", "code": 3})", "", from);
  CHECK_FALSE(r.compacted());
  r = Client::classify(400, R"({"error": "", "code": 11})", "", from);
  CHECK(r.compacted());
  // No leader and timeouts are UNAVAILABLE (14) in etcd 3.4: another member may serve.
  r = Client::classify(503, R"({"error": "etcdserver: no leader", "code": 14})", "", from);
  CHECK(r.unavailable);
  r = Client::classify(400, R"({"error": "etcdserver: requested lease not found", "code": 5})", "", from);
  CHECK_FALSE(r.unavailable);
  CHECK(r.code == 5);
  r = Client::classify(0, "", "connection refused", from);
  CHECK(r.unavailable);
  CHECK(r.code == 0);
  r = Client::classify(200, R"({"header": {"revision": "42"}})", "", from);
  CHECK(r.ok);
  CHECK(r.revision == 42);
}
