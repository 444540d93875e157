// SY_ASSERT: an invariant of a state machine. Checked in the plain and sanitizer builds (where the
// tests run), compiled out with NDEBUG (release builds): a broken invariant there should have been
// caught by the tests, and the proxy must not stop for it in production.
#pragma once

#include <cstdio>
#include <cstdlib>

#ifdef NDEBUG
#define SY_ASSERT(cond) ((void)0)
#else
#define SY_ASSERT(cond)                                                                          \
  ((cond) ? (void)0                                                                              \
          : (std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond), \
             std::abort()))
#endif
