#include "serve/api.h"

#include <cmath>

#include "data/corpus.h"
#include "data/tokenizer.h"

namespace bakallm {

std::string error_body(const ApiError& e) {
  nlohmann::json j = {{"error",
                       {{"message", e.what()},
                        {"type", e.type},
                        {"param", e.param.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.param)},
                        {"code", nullptr}}}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // a message may quote bad bytes
}

bool valid_session_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

std::string render_chat(const nlohmann::json& messages) {
  if (!messages.is_array() || messages.empty()) throw ApiError(400, "messages must be a non-empty array", "messages");
  std::string text;
  for (const auto& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw ApiError(400, "each message needs a string role and a string content", "messages");
    const auto role = m["role"].get<std::string>();
    const char* name = role == "system" ? "System" : role == "user" ? "User" : role == "assistant" ? "Assistant" : nullptr;
    if (!name) throw ApiError(400, "message role must be system, user or assistant, got '" + role + "'", "messages");
    text += std::string(name) + ": " + m["content"].get<std::string>() + "\n";
  }
  return text + "Assistant:";
}

namespace {

double number(const nlohmann::json& body, const char* field, double fallback, double lo, double hi) {
  if (!body.contains(field) || body[field].is_null()) return fallback;
  const auto& v = body[field];
  if (!v.is_number()) throw ApiError(400, std::string(field) + " must be a number", field);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw ApiError(400, std::string(field) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                   field);
  return x;
}

int64_t integer(const nlohmann::json& body, const char* field, int64_t fallback, int64_t lo, int64_t hi) {
  if (!body.contains(field) || body[field].is_null()) return fallback;
  const auto& v = body[field];
  if (!v.is_number_integer()) throw ApiError(400, std::string(field) + " must be an integer", field);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    throw ApiError(400, std::string(field) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                   field);
  return x;
}

bool flag(const nlohmann::json& body, const char* field) {
  if (!body.contains(field) || body[field].is_null()) return false;
  if (!body[field].is_boolean()) throw ApiError(400, std::string(field) + " must be true or false", field);
  return body[field].get<bool>();
}

std::vector<int64_t> tokens_of(const std::string& text, const Tokenizer* tok, bool add_bos) {
  if (!tok) throw ApiError(400, "this model has no tokenizer: give prompt as token ids", "prompt");
  if (invalid_utf8_offset(text) >= 0) throw ApiError(400, "prompt is not valid UTF-8", "prompt");
  std::vector<int64_t> out;
  for (uint32_t id : tok->encode_document(text, add_bos ? BosPolicy::kAuto : BosPolicy::kNone)) out.push_back(id);
  return out;
}

}  // namespace

CompletionRequest parse_completion(const nlohmann::json& body, bool chat, const std::string& model_name,
                                   const Tokenizer* tok, const ApiLimits& limits,
                                   const std::function<bool(const std::string&)>& session_exists) {
  if (!body.is_object()) throw ApiError(400, "the body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) throw ApiError(400, "model must be a string", "model");
    if (body["model"] != model_name)
      throw ApiError(400, "unknown model '" + body["model"].get<std::string>() + "' (this server has '" + model_name + "')",
                     "model", "model_not_found");
  }
  if (body.contains("session") && !body["session"].is_null()) {
    if (!body["session"].is_string() || !valid_session_id(body["session"].get<std::string>()))
      throw ApiError(400, "session must be 1 to 64 letters, digits, '_' or '-'", "session");
    r.session = body["session"].get<std::string>();
  }
  const bool fresh = r.session.empty() || !session_exists(r.session);
  r.stream = flag(body, "stream");
  r.echo = !chat && flag(body, "echo");
  r.options.max_new = integer(body, chat && body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
                              16, 0, limits.max_tokens);
  auto& s = r.options.sampling;
  s.temperature = number(body, "temperature", 1.0, 0.0, 2.0);
  s.top_p = number(body, "top_p", 1.0, 0.0, 1.0);
  if (s.top_p == 0.0) s.top_p = 1e-9;  // OpenAI allows 0: keep only the most likely token
  s.top_k = integer(body, "top_k", 0, 0, 1000000);
  s.min_p = number(body, "min_p", 0.0, 0.0, 0.999999);
  s.repeat_penalty = number(body, "repeat_penalty", 1.0, 0.01, 10.0);
  s.seed = static_cast<uint64_t>(integer(body, "seed", 0, 0, INT64_MAX));
  if (body.contains("n") && !body["n"].is_null() && body["n"] != 1) throw ApiError(400, "only n = 1 is supported", "n");

  if (body.contains("stop") && !body["stop"].is_null()) {
    const auto& stop = body["stop"];
    if (stop.is_string()) r.options.stops.push_back(stop.get<std::string>());
    else if (stop.is_array() && stop.size() <= 4) {
      for (const auto& x : stop) {
        if (!x.is_string()) throw ApiError(400, "stop must be a string or up to 4 strings", "stop");
        r.options.stops.push_back(x.get<std::string>());
      }
    } else {
      throw ApiError(400, "stop must be a string or up to 4 strings", "stop");
    }
    for (const auto& x : r.options.stops)
      if (x.empty()) throw ApiError(400, "a stop string must not be empty", "stop");
    if (!tok) throw ApiError(400, "this model has no tokenizer: stop strings cannot be matched", "stop");
  }

  if (chat) {
    if (!body.contains("messages")) throw ApiError(400, "messages is required", "messages");
    r.prompt = tokens_of(render_chat(body["messages"]), tok, fresh);
    r.options.stops.push_back("\nUser:");
    if (flag(body, "logprobs")) r.logprobs = integer(body, "top_logprobs", 0, 0, 5);
  } else {
    if (!body.contains("prompt")) throw ApiError(400, "prompt is required", "prompt");
    const auto& p = body["prompt"];
    if (p.is_string()) {
      r.prompt = tokens_of(p.get<std::string>(), tok, fresh);
    } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
      for (const auto& x : p) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= limits.vocab_size)
          throw ApiError(400, "prompt token ids must be integers in [0, " + std::to_string(limits.vocab_size) + ")",
                         "prompt");
        r.prompt.push_back(x.get<int64_t>());
      }
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = tokens_of(p[0].get<std::string>(), tok, fresh);
    } else {
      throw ApiError(400, "prompt must be a string, one string in a list, or a list of token ids", "prompt");
    }
    r.logprobs = integer(body, "logprobs", -1, 0, 5);
  }
  if (r.prompt.empty() && fresh) throw ApiError(400, "the prompt is empty (and this tokenizer adds no BOS)", "prompt");
  if (static_cast<int64_t>(r.prompt.size()) > limits.max_prompt_tokens)
    throw ApiError(400, "the prompt has " + std::to_string(r.prompt.size()) + " tokens; the limit is " +
                            std::to_string(limits.max_prompt_tokens) + " (continue a session to read more)",
                   "prompt", "invalid_request_error");
  return r;
}

}  // namespace bakallm
