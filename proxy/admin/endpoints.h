// The admin listener's one table of endpoints (docs/admin-api.md, "Endpoints"): every call of the
// native API, the seed catalog, and the Consul and Eureka front doors is a row of
// {methods, pattern, access, help, handler}. AdminApi::handle is the one gate in front of them: it
// matches the row, answers 405 with `Allow` for a method the pattern does not take, checks the
// token for calls that need it, refuses changes while the shared registry is away, bounds the
// body, parks blocking reads, and only then runs the handler. `GET /v1/` lists the table.
//
// The model is Envoy's admin (a handler table with help text, one place that checks methods),
// with families added: each API family (native, Consul, Eureka) answers errors in its own
// shape, written once in its Family.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/admin/admin_conn.h"

namespace sy::admin {

enum Method : unsigned { kGet = 1, kPut = 2, kPost = 4, kDelete = 8 };  // HEAD is served wherever GET is
// What a call may do, and so what the gate asks of it.
enum class Access {
  kRead,      // anyone who reaches the admin listener
  kRegistry,  // changes the registry: the token, and a writable shared registry
  kControl,   // acts on the proxy (reload): the token only
};

// One request as a handler sees it: the request and the pattern's {captures}, %XX decoded.
struct Call {
  AdminConn* conn;
  AdminRequest& req;
  std::vector<std::string> args;
  const std::string& arg(size_t i) const { return args.at(i); }
};

// An API family's shared shape: which paths are its own (for its 404), how it answers an error,
// an unauthorized call, and what every answer of it carries.
struct Family {
  std::string name;                   // "native", "consul", "eureka"
  std::string title;                  // in messages: "admin", "Consul", "Eureka"
  std::string docs;                   // where its calls are documented: "docs/admin-api.md"
  std::vector<std::string> prefixes;  // paths it owns; the native family owns the rest
  std::function<AdminResponse(int status, const std::string& code, const std::string& message)> error;
  std::function<AdminResponse()> unauthorized;
  // Runs before the method and token checks (Consul: ?dc= another datacenter); nullopt = go on.
  std::function<std::optional<AdminResponse>(const AdminRequest&)> precheck;
  // Every answer of the family, errors included, passes here (Consul: X-Consul-Index). `key`:
  // what the call watches ("" = the whole registry).
  std::function<void(AdminResponse&, const std::string& key)> decorate;
  // Blocking reads: a `wait` in the family's syntax → milliseconds (false: malformed).
  std::function<bool(const std::string&, int64_t&)> parse_wait;
  std::function<AdminResponse(int what, const AdminRequest&)> bad_poll;  // 0: bad index, 1: bad wait
};

struct Endpoint {
  static constexpr size_t kReadBody = 64 * 1024;        // a read carries no document
  static constexpr size_t kWriteBody = 1024 * 1024;     // AdminConn's own cap
  unsigned methods = kGet;
  std::string pattern;  // "/v1/services/{service}"; a last "{name*}" takes the rest (maybe empty)
  Access access = Access::kRead;
  std::string help;
  size_t family = 0;  // index into EndpointTable::families()
  std::function<AdminResponse(Call&)> handler;
  // Blocking reads (?index=&wait=): the key whose index the answer waits for ("" = the whole
  // registry); nullopt = answer now (the handler refuses a malformed call).
  std::function<std::optional<std::string>(const Call&)> watch;
  size_t max_body = 0;  // 0: by access (kReadBody for reads, kWriteBody otherwise)
  // A stream (GET /v1/events): runs instead of `handler` and answers with AdminConn::stream_begin.
  std::function<void(Call&)> stream;
  // Readable without the token even when admin.read_token is on: liveness, readiness, metrics
  // and the dashboard's own files (the page then asks for the token for its reads).
  bool public_read = false;

  static Endpoint row(unsigned methods, std::string pattern, Access access, std::string help, size_t family,
                      std::function<AdminResponse(Call&)> handler) {
    Endpoint e;
    e.methods = methods;
    e.pattern = std::move(pattern);
    e.access = access;
    e.help = std::move(help);
    e.family = family;
    e.handler = std::move(handler);
    return e;
  }
  size_t body_limit() const { return max_body ? max_body : access == Access::kRead ? kReadBody : kWriteBody; }
};

class EndpointTable {
 public:
  size_t add_family(Family f);
  // A pattern already in the table with a method in common is a programming error: thrown at
  // start (std::logic_error), so two handlers can never shadow each other.
  void add(Endpoint e);

  struct Match {
    const Endpoint* endpoint = nullptr;  // null: no row for this method (see `allow`) or path
    unsigned allow = 0;                  // the methods the matched pattern takes (0: no pattern)
    std::vector<std::string> args;
  };
  Match match(std::string_view method, std::string_view path) const;
  // The family that owns `path` (for answers to calls that match no row).
  const Family& family_of(std::string_view path) const;
  const Family& family(size_t i) const { return families_.at(i); }
  const std::vector<Endpoint>& endpoints() const { return rows_; }
  static std::string allow_header(unsigned methods);  // "GET, HEAD, PUT"
  static std::string methods_text(unsigned methods);  // "GET or PUT"

 private:
  struct Segment {
    std::string literal;  // empty: a capture
    bool rest = false;    // "{x*}"
  };
  static std::vector<Segment> compile(const std::string& pattern);
  std::vector<Family> families_;
  std::vector<Endpoint> rows_;
  std::vector<std::vector<Segment>> compiled_;  // by row
};

}  // namespace sy::admin
