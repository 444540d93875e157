// The buffer and exchange pools: what a burst takes goes back when trimmed; steady use keeps its own.
#include <doctest.h>

#include <vector>

#include "proxy/net/buffer_pool.h"
#include "proxy/server/exchange.h"

using sy::net::BufferPool;

TEST_CASE("buffer pool: a burst's buffers go back at the second trim; steady use keeps its own") {
  BufferPool pool;
  std::vector<char*> held;
  for (int i = 0; i < 40; ++i) held.push_back(pool.acquire());
  for (char* b : held) {
    REQUIRE(b != nullptr);
    b[0] = 'x';  // writable memory
  }
  for (char* b : held) pool.release(b);
  CHECK(pool.parked() == 40);
  pool.trim();  // the burst just ended: every buffer was in use since the last trim
  CHECK(pool.parked() == 40);
  // Steady traffic cycling through 10 buffers between trims keeps them (and the floor).
  for (int round = 0; round < 3; ++round) {
    std::vector<char*> busy;
    for (int i = 0; i < 10; ++i) busy.push_back(pool.acquire());
    for (char* b : busy) pool.release(b);
    pool.trim();
  }
  CHECK(pool.parked() == 10);
  pool.trim();  // nothing taken since: down to the floor
  CHECK(pool.parked() == 8);
}

TEST_CASE("exchange pool: trims the same way") {
  sy::server::ExchangePool pool;
  std::vector<std::unique_ptr<sy::server::Exchange>> held;
  for (int i = 0; i < 30; ++i) held.push_back(pool.acquire());
  for (auto& x : held) pool.release(std::move(x));
  pool.trim();
  CHECK(pool.parked() == 30);
  pool.trim();
  CHECK(pool.parked() == 8);
}
