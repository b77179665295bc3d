#include "serve/server.h"

#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "data/tokenizer.h"
#include "io/model_dir.h"
#include "serve/playground.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace bakallm {

namespace {

std::atomic<int> g_signal{0};
extern "C" void on_stop_signal(int sig) { g_signal = sig; }

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// JSON text of J; bytes that are not UTF-8 (a prompt's, quoted in an error) become U+FFFD.
std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e), "application/json");
}

nlohmann::json parse_body(const httplib::Request& req) {
  try {
    return nlohmann::json::parse(req.body);
  } catch (const nlohmann::json::exception& e) {
    throw ApiError(400, std::string("the body is not valid JSON: ") + e.what());
  }
}

class Server {
 public:
  Server(const ServeOptions& o, LoadedModel loaded)
      : o_(o),
        model_name_(std::filesystem::path(clean_dir(o.model_dir)).filename().string()),
        tok_(loaded.tokenizer_path.empty() ? nullptr : std::make_unique<Tokenizer>(loaded.tokenizer_path)),
        engine_(loaded.model, tok_.get(), o.engine) {
    limits_ = o.limits;
    limits_.vocab_size = loaded.config.vocab_size;
    routes();
  }

  int run() {
    const int port = o_.port == 0 ? http_.bind_to_any_port(o_.host) : (http_.bind_to_port(o_.host, o_.port) ? o_.port : -1);
    if (port < 0) throw Error("serve: cannot listen on " + o_.host + ":" + std::to_string(o_.port) + " (in use?)");
    // Debian's cpp-httplib 0.11 is a compiled library whose listen() asks for
    // a backlog of 5: a burst of more clients than that overflows the accept
    // queue (TcpExtListenOverflows), their handshakes are dropped and retried
    // seconds later, and some saw their connection closed unanswered (16
    // streams at once in the tests). Listening again on the bound socket
    // raises the backlog (Linux caps it at net.core.somaxconn).
    if (listen_fd_ >= 0) ::listen(listen_fd_, kListenBacklog);
    std::cout << "listening on http://" << o_.host << ":" << port << std::endl;
    std::thread watcher([this] {
      while (g_signal == 0 && !http_done_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (g_signal != 0) {
        engine_.stop();  // cancels streams (their handlers end) and writes the sessions
        http_.stop();
      }
    });
    http_.listen_after_bind();
    http_done_ = true;
    watcher.join();
    engine_.stop();
    std::cout << "stopped" << std::endl;
    return 0;
  }

 private:
  // Wraps a handler: ApiError -> its status; anything else -> 500.
  template <typename F>
  httplib::Server::Handler guarded(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const ApiError& e) {
        ++errors_;
        send_error(res, e);
      } catch (const std::exception& e) {
        ++errors_;
        send_error(res, ApiError(500, e.what(), "", "server_error"));
      }
    };
  }

  void routes() {
    http_.new_task_queue = [] { return new httplib::ThreadPool(64); };
    http_.set_socket_options([this](socket_t sock) {  // the socket it binds last: the listening one
      httplib::default_socket_options(sock);
      listen_fd_ = sock;
    });
    http_.set_payload_max_length(static_cast<size_t>(o_.max_body_bytes));
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (o_.api_key.empty() || req.path == "/" || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + o_.api_key) return httplib::Server::HandlerResponse::Unhandled;
      ++errors_;
      send_error(res, ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", "", "authentication_error"));
      return httplib::Server::HandlerResponse::Handled;
    });
    http_.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      ++errors_;
      const auto msg = res.status == 404 ? "no such endpoint" : res.status == 413 ? "the body is too large" : "bad request";
      send_error(res, ApiError(res.status, msg));
    });

    http_.Get("/", [](const httplib::Request&, httplib::Response& res) { res.set_content(playground_html(), "text/html"); });
    http_.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });
    http_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"object", "list"},
                           {"data", {{{"id", model_name_}, {"object", "model"}, {"created", 0}, {"owned_by", "bakallm"}}}}});
    });
    http_.Post("/v1/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
      complete(req, res, false);
    }));
    http_.Post("/v1/chat/completions", guarded([this](const httplib::Request& req, httplib::Response& res) {
      complete(req, res, true);
    }));
    http_.Post("/tokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto body = parse_body(req);
      if (!tok_) throw ApiError(400, "this model has no tokenizer");
      if (!body.is_object() || !body.contains("content") || !body["content"].is_string())
        throw ApiError(400, "content must be a string", "content");
      const bool special = body.contains("add_special") && body["add_special"].is_boolean() && body["add_special"].get<bool>();
      const auto ids = tok_->encode_document(body["content"].get<std::string>(), special ? BosPolicy::kAuto : BosPolicy::kNone);
      send_json(res, 200, {{"tokens", ids}});
    }));
    http_.Post("/detokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto body = parse_body(req);
      if (!tok_) throw ApiError(400, "this model has no tokenizer");
      if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array())
        throw ApiError(400, "tokens must be a list of token ids", "tokens");
      std::vector<uint32_t> ids;
      for (const auto& t : body["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= limits_.vocab_size)
          throw ApiError(400, "tokens must be integers in [0, " + std::to_string(limits_.vocab_size) + ")", "tokens");
        ids.push_back(t.get<uint32_t>());
      }
      send_json(res, 200, {{"content", tok_->decode(ids)}});
    }));
    http_.Get("/v1/sessions", guarded([this](const httplib::Request&, httplib::Response& res) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& s : engine_.sessions())
        list.push_back({{"id", s.id}, {"tokens", s.tokens}, {"in_memory", s.in_memory}, {"in_use", s.in_use}});
      send_json(res, 200, {{"object", "list"}, {"data", list}});
    }));
    http_.Delete(R"(/v1/sessions/([A-Za-z0-9_\-]{1,64}))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      if (!engine_.delete_session(id)) throw ApiError(404, "no session '" + id + "' (or it is in use)", "session");
      send_json(res, 200, {{"id", id}, {"deleted", true}});
    }));
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { res.set_content(metrics(), "text/plain; version=0.0.4"); });
  }

  std::string metrics() {
    const auto s = engine_.stats();
    std::ostringstream m;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      m << "# HELP bakallm_" << name << " " << help << "\n# TYPE bakallm_" << name << " " << type << "\nbakallm_" << name
        << " " << v << "\n";
    };
    metric("requests_total", "counter", "completion requests accepted", double(s.requests));
    metric("request_errors_total", "counter", "requests answered with an error", double(errors_));
    metric("prompt_tokens_total", "counter", "prompt tokens read", double(s.prompt_tokens));
    metric("completion_tokens_total", "counter", "tokens generated", double(s.completion_tokens));
    metric("tokens_per_second", "gauge", "generated tokens per second of decoding", s.decode_seconds > 0 ? double(s.completion_tokens) / s.decode_seconds : 0.0);
    metric("active_streams", "gauge", "requests being decoded", double(s.active));
    metric("queue_length", "gauge", "requests waiting for a stream", double(s.queued));
    metric("sessions_in_memory", "gauge", "sessions held in memory", double(s.sessions_in_memory));
    metric("sessions_on_disk", "gauge", "sessions written to --sessions-dir", double(s.sessions_on_disk));
    return m.str();
  }

  nlohmann::json usage(const Job& job) const {
    return {{"prompt_tokens", job.prompt_tokens},
            {"completion_tokens", job.completion_tokens},
            {"total_tokens", job.prompt_tokens + job.completion_tokens}};
  }

  std::string piece(int64_t id) const {
    return tok_ && id >= 0 ? tok_->decode({static_cast<uint32_t>(id)}) : std::to_string(id);
  }

  void complete(const httplib::Request& req, httplib::Response& res, bool chat) {
    const auto body = parse_body(req);
    auto request = parse_completion(body, chat, model_name_, tok_.get(), limits_,
                                    [this](const std::string& id) { return engine_.session_exists(id); });
    const std::string id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_);
    const std::string echo = request.echo && tok_ ? tok_->decode(std::vector<uint32_t>(request.prompt.begin(), request.prompt.end())) : "";
    auto job = engine_.submit(std::move(request));
    const int64_t created = now_seconds();
    auto chunk = [this, id, created, chat](const std::string& text, const nlohmann::json& finish, const nlohmann::json& logprobs) {
      nlohmann::json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", logprobs}};
      if (chat) choice["delta"] = text.empty() && finish.is_null() ? nlohmann::json{{"role", "assistant"}} : nlohmann::json{{"content", text}};
      else choice["text"] = text;
      return nlohmann::json{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                            {"model", model_name_}, {"choices", {choice}}};
    };
    auto logprobs_of = [this, chat](const std::vector<TokenEvent>& events) -> nlohmann::json {
      nlohmann::json tokens = nlohmann::json::array(), lps = nlohmann::json::array(), tops = nlohmann::json::array();
      nlohmann::json content = nlohmann::json::array();
      for (const auto& e : events) {
        if (e.id < 0) continue;
        nlohmann::json top = nlohmann::json::object(), top_list = nlohmann::json::array();
        for (const auto& [t, lp] : e.top) {
          top[piece(t)] = lp;
          top_list.push_back({{"token", piece(t)}, {"logprob", lp}});
        }
        tokens.push_back(piece(e.id));
        lps.push_back(e.logprob);
        tops.push_back(top);
        content.push_back({{"token", piece(e.id)}, {"logprob", e.logprob}, {"top_logprobs", top_list}});
      }
      if (chat) return {{"content", content}};
      return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}};
    };
    const bool want_logprobs = job->request.logprobs >= 0;

    if (!job->request.stream) {
      std::vector<TokenEvent> events;
      while (!job->finished()) job->next(events, std::chrono::milliseconds(200));
      if (!job->error.empty()) throw ApiError(500, job->error, "", "server_error");
      std::string text = echo;
      std::vector<int64_t> ids;
      for (const auto& e : events) {
        text += e.text;
        if (e.id >= 0) ids.push_back(e.id);
      }
      nlohmann::json choice = {{"index", 0}, {"finish_reason", finish_reason_name(job->finish)},
                               {"logprobs", want_logprobs ? logprobs_of(events) : nlohmann::json(nullptr)},
                               {"token_ids", ids}};
      if (chat) choice["message"] = {{"role", "assistant"}, {"content", text}};
      else choice["text"] = text;
      nlohmann::json out = {{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
                            {"model", model_name_}, {"choices", {choice}}, {"usage", usage(*job)}};
      if (!job->request.session.empty()) out["session"] = job->request.session;
      send_json(res, 200, out);
      return;
    }

    res.set_header("Cache-Control", "no-cache");
    auto started = std::make_shared<bool>(false);
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, job, chunk, logprobs_of, want_logprobs, started, echo, chat](size_t, httplib::DataSink& sink) {
          auto send = [&](const nlohmann::json& j) {
            const std::string line = "data: " + dump(j) + "\n\n";
            return sink.write(line.data(), line.size());
          };
          if (!*started) {
            *started = true;
            if ((chat || !echo.empty()) && !send(chunk(echo, nullptr, nullptr))) return job->cancel(), false;
          }
          std::vector<TokenEvent> events;
          if (job->next(events, std::chrono::milliseconds(100))) {
            for (const auto& e : events)
              if (!e.text.empty() || want_logprobs)
                if (!send(chunk(e.text, nullptr, want_logprobs ? logprobs_of({e}) : nlohmann::json(nullptr))))
                  return job->cancel(), false;
          } else if (!sink.is_writable()) {
            job->cancel();
            return false;
          }
          if (job->finished()) {
            auto last = chunk("", finish_reason_name(job->finish), nullptr);
            if (chat) last["choices"][0]["delta"] = nlohmann::json::object();
            last["usage"] = usage(*job);
            if (!job->error.empty()) last["error"] = {{"message", job->error}, {"type", "server_error"}};
            const std::string done = "data: [DONE]\n\n";
            if (!send(last) || !sink.write(done.data(), done.size())) return false;
            sink.done();
          }
          return true;
        },
        [job](bool success) {
          if (!success) job->cancel();
        });
  }

  const ServeOptions& o_;
  std::string model_name_;
  std::unique_ptr<Tokenizer> tok_;
  ApiLimits limits_;
  Engine engine_;
  httplib::Server http_;
  static constexpr int kListenBacklog = 512;
  int listen_fd_ = -1;
  std::atomic<bool> http_done_{false};
  std::atomic<int64_t> errors_{0}, next_id_{0};
};

}  // namespace

int serve(const ServeOptions& o) {
  auto loaded = load_model_dir(o.model_dir);
  use_weights(loaded.model, o.weights);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that goes away is a failed write, not a dead server
  Server server(o, std::move(loaded));
  return server.run();
}

}  // namespace bakallm
