// bakallm serve --model DIR [--host H] [--port P] [--parallel N] ...: the OpenAI-compatible server.
#include "cli/commands.h"
#include "serve/server.h"

namespace bakallm::cli {

void add_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API (docs/SERVER.md)");
  cmd->add_option("--model", o->model_dir, "model directory")->required();
  cmd->add_option("--host", o->host, "address to listen on (127.0.0.1: this machine only)");
  cmd->add_option("--port", o->port, "port (0: any free one, printed)")->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", o->engine.parallel, "streams decoded at once")->check(kPositive);
  cmd->add_option("--queue", o->engine.queue, "requests that may wait beyond those (more: 429)")->check(kNonNegative);
  cmd->add_option("--weights", o->weights, "float32, bfloat16 (half the bytes a token reads) or int8 (Q8_0, a quarter)")
      ->check(CLI::IsMember({"float32", "bfloat16", "int8"}));
  cmd->add_option("--sessions-dir", o->engine.sessions_dir, "where sessions beyond --max-sessions (and all, at exit) are kept");
  cmd->add_option("--max-sessions", o->engine.max_sessions, "sessions kept in memory")->check(kNonNegative);
  cmd->add_option("--api-key", o->api_key, "require Authorization: Bearer KEY");
  cmd->add_option("--max-prompt-tokens", o->limits.max_prompt_tokens, "prompt tokens per request at most")
      ->check(kPositive);
  cmd->add_option("--max-tokens", o->limits.max_tokens, "generated tokens per request at most")->check(kPositive);
  cmd->callback([o] { std::exit(serve(*o)); });
}

}  // namespace bakallm::cli
