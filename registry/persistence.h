// Keeps dynamic registrations on disk across restarts: one JSON file, replaced atomically
// (write temp, fsync, rename, fsync directory). The caller batches the changes of one loop turn
// into one save().
#pragma once

#include <string>

#include "registry/registry.h"

namespace sy::registry {

// Writes every dynamic instance of `r` to `path`. Returns "" or an error message.
std::string save_snapshot(const Registry& r, const std::string& path);

// Loads `path` into `r` (leases restart at `now_ms`). A missing file is not an error (first
// start); an unreadable or corrupt one is, and the message names the file and the problem.
std::string load_snapshot(Registry& r, const std::string& path, int64_t now_ms);

}  // namespace sy::registry
