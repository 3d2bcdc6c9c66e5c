// Logging for hv processes: one line per message on stderr, prefixed with the
// process's role ("hvbroker", "hvcore", "lpc@31.0") so interleaved output stays readable.
#ifndef HV_COMMON_LOG_H_
#define HV_COMMON_LOG_H_

#include <cstdarg>
#include <string>

namespace hv {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Sets the prefix of every line this process logs; call once at start.
void SetLogTag(const std::string& tag);
// Lines below this level are dropped. HV_LOG=debug in the environment lowers it.
void SetLogLevel(LogLevel level);
void InitLogLevelFromEnv();

void Logf(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

#define HV_DEBUG(...) ::hv::Logf(::hv::LogLevel::kDebug, __VA_ARGS__)
#define HV_INFO(...) ::hv::Logf(::hv::LogLevel::kInfo, __VA_ARGS__)
#define HV_WARN(...) ::hv::Logf(::hv::LogLevel::kWarning, __VA_ARGS__)
#define HV_ERROR(...) ::hv::Logf(::hv::LogLevel::kError, __VA_ARGS__)

}  // namespace hv

#endif  // HV_COMMON_LOG_H_
