// The proxy's own resources running short (file descriptors, its connection cap, memory): what a
// failure of that kind is, and its name in logs and in switchyard_resource_exhaustion_total.
// Such a failure is the proxy's, never a backend's: it must not count against an instance.
#pragma once

#include <uv.h>

namespace sy::net {

enum class Resource { kFd = 0, kConnections = 1, kMemory = 2 };
constexpr int kResourceKinds = 3;

inline const char* resource_name(Resource r) {
  switch (r) {
    case Resource::kFd: return "fd";
    case Resource::kConnections: return "connections";
    case Resource::kMemory: return "memory";
  }
  return "?";
}

// A libuv error that says this process ran out of something (not that a peer failed).
inline bool is_exhaustion(int uv_err, Resource& which) {
  switch (uv_err) {
    case UV_EMFILE:
    case UV_ENFILE:
      which = Resource::kFd;
      return true;
    case UV_ENOBUFS:
    case UV_ENOMEM:
      which = Resource::kMemory;
      return true;
    default:
      return false;
  }
}

}  // namespace sy::net
