// EndpointTable: patterns compiled once at start, matched segment by segment per call.
#include "proxy/admin/endpoints.h"

#include <stdexcept>

namespace sy::admin {

namespace {

// Path segments, empty ones dropped ("/v1/" is "/v1"), each %XX decoded: an id such as
// "service%3Aweb-1" is one segment "service:web-1", and "%2F" inside an id never splits it.
std::vector<std::string> segments(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) out.push_back(url_decode(path.substr(i, j - i), false));
    i = j + 1;
  }
  return out;
}

unsigned method_bit(std::string_view m) {
  if (m == "GET" || m == "HEAD") return kGet;
  if (m == "PUT") return kPut;
  if (m == "POST") return kPost;
  if (m == "DELETE") return kDelete;
  return 0;
}

}  // namespace

std::vector<EndpointTable::Segment> EndpointTable::compile(const std::string& pattern) {
  std::vector<Segment> out;
  for (auto& s : segments(pattern)) {
    Segment seg;
    if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
      seg.rest = s.size() >= 3 && s[s.size() - 2] == '*';
    } else {
      seg.literal = std::move(s);
    }
    out.push_back(std::move(seg));
  }
  for (size_t i = 0; i + 1 < out.size(); ++i)
    if (out[i].rest) throw std::logic_error("admin endpoint " + pattern + ": a {x*} capture must come last");
  return out;
}

size_t EndpointTable::add_family(Family f) {
  families_.push_back(std::move(f));
  return families_.size() - 1;
}

void EndpointTable::add(Endpoint e) {
  auto segs = compile(e.pattern);
  if (e.family >= families_.size()) throw std::logic_error("admin endpoint " + e.pattern + ": no such family");
  for (size_t i = 0; i < rows_.size(); ++i) {
    const auto& o = compiled_[i];
    bool same = o.size() == segs.size();
    for (size_t k = 0; same && k < o.size(); ++k) same = o[k].literal == segs[k].literal && o[k].rest == segs[k].rest;
    if (same && (rows_[i].methods & e.methods))
      throw std::logic_error("admin endpoint " + e.pattern + " is already in the table as " + rows_[i].pattern);
  }
  rows_.push_back(std::move(e));
  compiled_.push_back(std::move(segs));
}

EndpointTable::Match EndpointTable::match(std::string_view method, std::string_view path) const {
  const auto parts = segments(path);
  // The most specific pattern wins: at the first segment where two matching patterns differ, a
  // literal beats a capture, and a capture beats a {rest*} ("/v1/agent/service/register" over
  // "/v1/agent/service/{id}").
  std::string best;  // per segment: 'L' literal, 'C' capture, 'R' rest
  Match m;
  const unsigned bit = method_bit(method);
  for (size_t i = 0; i < rows_.size(); ++i) {
    const auto& segs = compiled_[i];
    std::string shape;
    std::vector<std::string> args;
    bool ok = true;
    size_t k = 0;
    for (; ok && k < segs.size(); ++k) {
      if (segs[k].rest) {
        std::string rest;
        for (size_t j = k; j < parts.size(); ++j) rest += (j > k ? "/" : "") + parts[j];
        args.push_back(std::move(rest));
        shape += 'R';
        k = parts.size();
        break;
      }
      if (k >= parts.size()) ok = false;
      else if (!segs[k].literal.empty()) {
        ok = segs[k].literal == parts[k];
        shape += 'L';
      } else {
        args.push_back(parts[k]);
        shape += 'C';
      }
    }
    if (!ok || k != parts.size()) continue;
    // 'L' > 'C' > 'R' in this order: compare with the characters reversed in rank.
    auto rank = [](const std::string& s) {
      std::string r;
      for (char c : s) r += c == 'L' ? '3' : c == 'C' ? '2' : '1';
      return r;
    };
    const std::string key = rank(shape);
    if (key > best || m.allow == 0) {
      best = key;
      m = Match{};
    } else if (key < best) {
      continue;
    }
    m.allow |= rows_[i].methods;
    if (rows_[i].methods & bit) {
      m.endpoint = &rows_[i];
      m.args = std::move(args);
    }
  }
  return m;
}

const Family& EndpointTable::family_of(std::string_view path) const {
  size_t native = 0;
  for (size_t i = 0; i < families_.size(); ++i) {
    if (families_[i].prefixes.empty()) native = i;
    for (const auto& p : families_[i].prefixes)
      if (path.substr(0, p.size()) == p) return families_[i];
  }
  return families_.at(native);
}

std::string EndpointTable::allow_header(unsigned methods) {
  std::string out;
  auto add = [&](const char* m) { out += (out.empty() ? "" : ", ") + std::string(m); };
  if (methods & kGet) {
    add("GET");
    add("HEAD");
  }
  if (methods & kPut) add("PUT");
  if (methods & kPost) add("POST");
  if (methods & kDelete) add("DELETE");
  return out;
}

std::string EndpointTable::methods_text(unsigned methods) {
  std::vector<std::string> names;
  if (methods & kGet) names.push_back("GET");
  if (methods & kPut) names.push_back("PUT");
  if (methods & kPost) names.push_back("POST");
  if (methods & kDelete) names.push_back("DELETE");
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

}  // namespace sy::admin
