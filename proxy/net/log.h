// The event log: one line per event on stderr, with a level. Single-process, line-buffered.
#pragma once

#include <string>
#include <string_view>

namespace sy::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_level(Level l);
Level parse_level(std::string_view s);
bool enabled(Level l);
void write(Level l, std::string_view msg);

inline void debug(std::string_view m) { write(Level::kDebug, m); }
inline void info(std::string_view m) { write(Level::kInfo, m); }
inline void warn(std::string_view m) { write(Level::kWarn, m); }
inline void error(std::string_view m) { write(Level::kError, m); }
// Start-up facts (where it listens, that it is ready): printed whatever the level.
void notice(std::string_view m);

}  // namespace sy::log
