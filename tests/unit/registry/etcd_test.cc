// The etcd client's pure helpers: base64 (keys and values on the JSON gateway) and prefix ranges.
#include <doctest.h>

#include "proxy/http/base64.h"
#include "registry/etcd/client.h"

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
