// switchyard: command line (README, "Command line") and start-up.
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/resource.h>
#include <sys/stat.h>
#include <vector>

#include "conf/config.h"
#include "proxy/app.h"
#include "proxy/net/tls_config.h"
#include "version.h"

namespace {

const char* kUsage =
    "usage:\n"
    "  switchyard [-c FILE]            run; FILE defaults to conf/switchyard.yaml\n"
    "  switchyard --check [-c FILE]    validate only: prints \"FILE: ok\" or one line per problem\n"
    "                                  as FILE:LINE:COL: message, and exits 1\n"
    "  switchyard --version | --help\n"
    "\n"
    "signals: SIGHUP reloads the config, SIGTERM/SIGINT drain and stop, SIGUSR1 reopens the access log\n";

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  bool explicit_path = false, check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--version" || a == "-V") {
      std::printf("switchyard %s\n", SWITCHYARD_VERSION);
      return 0;
    }
    if (a == "--check" || a == "-t") {
      check = true;
    } else if (a == "-c" || a == "--config") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "switchyard: %s needs a file name\n%s", a.c_str(), kUsage);
        return 2;
      }
      path = argv[++i];
      explicit_path = true;
    } else if (a.rfind("--config=", 0) == 0) {
      path = a.substr(9);
      explicit_path = true;
    } else {
      std::fprintf(stderr, "switchyard: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (!explicit_path) path = "conf/switchyard.yaml";
  struct stat st{};
  // Without -c and without the default file, the built-in defaults apply (docs/configuration.md).
  const bool use_defaults = !explicit_path && stat(path.c_str(), &st) != 0;
  sy::conf::Config cfg;
  std::vector<std::string> errors;
  if (!use_defaults && !sy::conf::load_file(path, cfg, errors)) {
    for (const auto& e : errors) std::fprintf(check ? stdout : stderr, "%s\n", e.c_str());
    return 1;
  }
  // Certificates, keys and CA bundles load here too, so a start refuses what --check refuses.
  sy::net::TlsProblems tls;
  sy::net::check_tls(cfg, tls);
  for (const auto& w : tls.warnings) std::fprintf(check ? stdout : stderr, "%s (warning)\n", w.c_str());
  if (!tls.errors.empty()) {
    for (const auto& e : tls.errors) std::fprintf(check ? stdout : stderr, "%s\n", e.c_str());
    return 1;
  }
  if (check) {
    std::printf("%s: ok\n", use_defaults ? "(built-in defaults)" : path.c_str());
    return 0;
  }
  // Every connection is a file descriptor: take the hard limit (as nginx and HAProxy do).
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  sy::App app(use_defaults ? "" : path, std::move(cfg));
  return app.run();
}
