// `bakallm serve`: an OpenAI-compatible HTTP server on cpp-httplib
// (docs/SERVER.md). Routes parse and check requests (serve/api.h) and hand
// them to the Engine (serve/engine.h), which decodes every stream.
#pragma once
#include <cstdint>
#include <string>

#include "serve/engine.h"

namespace bakallm {

struct ServeOptions {
  std::string model_dir;
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (printed)
  std::string weights = "float32";  // or bfloat16, int8
  std::string api_key;             // "": no key needed
  EngineOptions engine;
  ApiLimits limits;
  int64_t max_body_bytes = 8 << 20;
};

// Serves until SIGINT or SIGTERM: then stops accepting, cancels the running
// streams, writes the sessions to --sessions-dir and returns 0. Prints
// "listening on http://HOST:PORT" once ready.
int serve(const ServeOptions& options);

}  // namespace bakallm
