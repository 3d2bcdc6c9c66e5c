#include "common/log.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace hv {
namespace {
std::string g_tag = "hv";
LogLevel g_level = LogLevel::kInfo;
}  // namespace

void SetLogTag(const std::string& tag) { g_tag = tag; }
void SetLogLevel(LogLevel level) { g_level = level; }

void InitLogLevelFromEnv() {
  const char* env = getenv("HV_LOG");
  if (env == nullptr) return;
  if (strcmp(env, "debug") == 0) g_level = LogLevel::kDebug;
  if (strcmp(env, "warning") == 0) g_level = LogLevel::kWarning;
  if (strcmp(env, "error") == 0) g_level = LogLevel::kError;
}

void Logf(LogLevel level, const char* format, ...) {
  if (level < g_level) return;
  static const char* const kNames[] = {"debug", "info", "warning", "error"};
  char body[2048];
  va_list args;
  va_start(args, format);
  vsnprintf(body, sizeof(body), format, args);
  va_end(args);
  char line[2200];
  int n = snprintf(line, sizeof(line), "%s: %s%s%s\n", g_tag.c_str(),
                   level == LogLevel::kInfo ? "" : kNames[static_cast<int>(level)],
                   level == LogLevel::kInfo ? "" : ": ", body);
  if (n > static_cast<int>(sizeof(line)) - 1) n = sizeof(line) - 1;
  // One write per line: lines of several processes sharing stderr do not interleave.
  ssize_t ignored = write(STDERR_FILENO, line, n);
  (void)ignored;
}

}  // namespace hv
