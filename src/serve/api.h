// The OpenAI-compatible request and response formats of `bakallm serve`:
// parsing and checking a /v1/completions or /v1/chat/completions body into a
// CompletionRequest, the chat template, and OpenAI-style error bodies.
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "infer/generate.h"

namespace bakallm {

class Tokenizer;

// An error answered as {"error": {"message", "type", "param", "code"}} with STATUS.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, const std::string& param = "",
           const std::string& type = "invalid_request_error")
      : std::runtime_error(message), status(status), param(param), type(type) {}
  int status;
  std::string param, type;
};
std::string error_body(const ApiError& e);

struct ApiLimits {
  int64_t max_prompt_tokens = 32768;
  int64_t max_tokens = 4096;  // generated tokens per request at most
  int64_t vocab_size = 0;
};

struct CompletionRequest {
  bool chat = false;
  bool stream = false;
  std::string session;              // "" or the session to continue
  std::vector<int64_t> prompt;      // token ids to read (BOS first for a fresh stream, when the tokenizer adds one)
  GenerateOptions options;          // max_new, sampling, stops
  int64_t logprobs = -1;            // completions: top alternatives per token (0..5); chat: 0 with logprobs true; -1 off
  bool echo = false;
};

// The chat template (BakaLLM has no chat format): each message as
// "<Role>: <content>\n" (System, User, Assistant), then "Assistant:". Generation
// stops at "\nUser:" as well as at the request's stops.
std::string render_chat(const nlohmann::json& messages);

// Parses BODY (already valid JSON) for MODEL_NAME. Throws ApiError 400 naming
// the field. TOKENIZER may be null (then prompts must be token ids).
// CONTINUING: the session exists, so no BOS is added to the prompt.
CompletionRequest parse_completion(const nlohmann::json& body, bool chat, const std::string& model_name,
                                   const Tokenizer* tokenizer, const ApiLimits& limits,
                                   const std::function<bool(const std::string&)>& session_exists);

bool valid_session_id(const std::string& id);  // [A-Za-z0-9_-]{1,64}

}  // namespace bakallm
