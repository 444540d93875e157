// EventStream: one encode per event, shared frames, bounded history and readers.
#include "proxy/admin/events.h"

#include <nlohmann/json.hpp>

#include "registry/codec.h"

namespace sy::admin {

using nlohmann::json;

namespace {

json event_json(const Event& e) {
  json j{{"id", e.id}, {"type", e.type}, {"time_ms", e.time_ms}, {"message", e.message}};
  if (!e.service.empty()) j["service"] = e.service;
  if (!e.instance.empty()) j["instance"] = e.instance;
  return j;
}

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' || c == ':';
}

}  // namespace

std::pair<std::string, std::string> event_subject(std::string_view m) {
  const size_t colon = m.find(": ");
  if (colon == std::string_view::npos) return {};
  std::string_view rest = m.substr(colon + 2);
  // Some sentences name their subject after a further "label: " ("shared registry: orders/o-1 ...").
  for (int tries = 0; tries < 2; ++tries) {
    size_t end = 0;
    while (end < rest.size() && id_char(rest[end])) ++end;
    const std::string_view word = rest.substr(0, end);
    const size_t slash = end < rest.size() && rest[end] == '/' ? end : std::string_view::npos;
    if (slash != std::string_view::npos) {
      size_t id_end = slash + 1;
      while (id_end < rest.size() && id_char(rest[id_end])) ++id_end;
      std::string service(word), id(rest.substr(slash + 1, id_end - slash - 1));
      if (registry::valid_service_name(service) && registry::valid_instance_id(id)) return {service, id};
      return {};
    }
    const size_t next = rest.find(": ");
    if (next == std::string_view::npos) return {};
    rest = rest.substr(next + 2);
  }
  return {};
}

uint64_t EventStream::publish(std::string type, std::string message, int64_t time_ms, std::string about) {
  Stored s;
  s.event.id = next_id_++;
  s.event.type = std::move(type);
  s.event.time_ms = time_ms;
  auto [service, instance] = event_subject(message);
  s.event.service = service.empty() ? std::move(about) : std::move(service);
  s.event.instance = std::move(instance);
  s.event.message = std::move(message);
  // The one encode: JSON has no raw newlines, so the data fits on one `data:` line.
  s.frame = std::make_shared<const std::string>("id: " + std::to_string(s.event.id) + "\nevent: " + s.event.type +
                                                "\ndata: " + event_json(s.event).dump() + "\n\n");
  ++encoded_;
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    AdminConn* c = *it++;  // send() may drop it from the set
    send(c, s.frame);
  }
  history_.push_back(std::move(s));
  if (history_.size() > kHistory) history_.pop_front();
  return history_.back().event.id;
}

void EventStream::send(AdminConn* conn, const std::shared_ptr<const std::string>& frame) {
  if (conn->stream_send(frame, kMaxBehind)) return;
  // Too far behind (or gone): dropped; it comes back with Last-Event-ID and is replayed.
  watchers_.erase(conn);
  conn->close();
}

void EventStream::watch(AdminConn* conn, uint64_t last_id, bool has_last_id) {
  AdminResponse head;
  head.content_type = "text/event-stream; charset=utf-8";
  head.headers = {{"Cache-Control", "no-store"}, {"X-Accel-Buffering", "no"}};
  head.body = "retry: " + std::to_string(kRetryMs) + "\n\n";
  conn->stream_begin(head);
  watchers_.insert(conn);
  if (!has_last_id) return;  // a new reader: from now on (it has just read the current state)
  const uint64_t oldest = history_.empty() ? next_id_ : history_.front().event.id;
  if (last_id + 1 < oldest || last_id >= next_id_) {
    // Missed more than the history holds, or an id from another process: start over.
    Event e;
    e.type = "resync";
    e.id = next_id_ - 1;
    e.message = "the events since " + std::to_string(last_id) + " are no longer kept: read the current state again";
    send(conn, std::make_shared<const std::string>("id: " + std::to_string(e.id) + "\nevent: resync\ndata: " + event_json(e).dump() + "\n\n"));
    return;
  }
  for (const auto& s : history_) {
    if (s.event.id <= last_id) continue;
    if (!watchers_.count(conn)) return;  // dropped while catching up
    send(conn, s.frame);
  }
}

void EventStream::tick(int64_t now_ms) {
  if (now_ms - last_beat_ms_ < kHeartbeatMs) return;
  last_beat_ms_ = now_ms;
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    AdminConn* c = *it++;
    send(c, beat_);
  }
}

std::string EventStream::history_json(size_t limit) const {
  json list = json::array();
  const size_t skip = history_.size() > limit ? history_.size() - limit : 0;
  for (size_t i = skip; i < history_.size(); ++i) list.push_back(event_json(history_[i].event));
  return json{{"events", list}, {"last_id", last_id()}}.dump(2) + "\n";
}

}  // namespace sy::admin
