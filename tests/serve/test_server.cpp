// `bakallm serve` end to end: the real binary on a free loopback port, real
// HTTP clients (cpp-httplib's). Greedy output equals `bakallm generate`,
// alone and with 15 other streams running; a session continued in pieces
// gives the tokens of one request on the whole text, also after being written
// to disk and after a restart; bad requests get 4xx JSON errors while the
// server keeps serving; SIGTERM saves sessions and exits 0.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "paths.h"
#include "process.h"
#include "run_cli.h"

namespace bakallm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A small random BakaLLM with the OpenLLaMA tokenizer, served by the binary.
class Serve : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string tok = test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model");
    if (!fs::exists(tok)) GTEST_SKIP() << "needs ../shared/data/tokenizer";
    std::ofstream(dir / "c.json")
        << R"({"hidden_dim": 32, "num_layers": 2, "num_memory_tokens": 2, "window_size": 8, "vocab_size": 32000})";
    auto r = test::run_cli("init --config " + dir / "c.json" + " --seed 5 --tokenizer " + tok + " --out " + model);
    ASSERT_EQ(r.status, 0) << r.out;
  }
  void TearDown() override { stop_server(); }

  void start_server(const std::string& extra = "") {
    log = dir / ("serve" + std::to_string(++starts) + ".log");
    pid = test::start("serve --model " + model + " --port 0 " + extra, log);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::smatch m;
    const std::regex re("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    while (std::chrono::steady_clock::now() < deadline) {
      const auto out = test::read_file(log);
      if (std::regex_search(out, m, re)) {
        port = std::stoi(m[1]);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "the server did not start: " << test::read_file(log);
  }
  int stop_server() {
    if (pid <= 0) return -1;
    ::kill(pid, SIGTERM);
    const int status = test::wait_for(pid);
    pid = -1;
    return status;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
  json post(const std::string& path, const json& body, int expect = 200) {
    auto res = client().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return {};
    EXPECT_EQ(res->status, expect) << path << " " << res->body;
    return json::parse(res->body);
  }
  std::vector<int64_t> generate_cli(const std::vector<int64_t>& prompt, int max_new) {
    std::string ids;
    for (auto i : prompt) ids += (ids.empty() ? "" : ",") + std::to_string(i);
    auto r = test::run_cli("generate --model " + model + " --prompt-ids " + ids + " --temperature 0 --max-new " +
                           std::to_string(max_new) + " --json");
    EXPECT_EQ(r.status, 0) << r.out;
    return json::parse(r.out)["ids"].get<std::vector<int64_t>>();
  }
  // A streamed completion sent on a raw socket, read until its first bytes
  // came (the request holds its stream now); the caller closes the socket,
  // which the server sees as a client that left.
  int open_stream(const json& body) const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string text = body.dump();
    const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                            std::to_string(text.size()) + "\r\n\r\n" + text;
    EXPECT_EQ(::send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
    char buf[512];
    EXPECT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the stream has begun
    return fd;
  }
  static std::vector<int64_t> ids_of(const json& completion) {
    return completion["choices"][0]["token_ids"].get<std::vector<int64_t>>();
  }

  test::TempDir dir;
  std::string model = dir / "m", log;
  pid_t pid = -1;
  int port = 0, starts = 0;
};

std::vector<int64_t> prompt_of(int seed, int n) {
  std::mt19937 rng(seed);
  std::vector<int64_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(300 + static_cast<int64_t>(rng() % 5000));
  return p;
}

TEST_F(Serve, GreedyEqualsGenerateAloneAndWithFifteenOthers) {
  start_server("--parallel 16");
  const auto prompt = prompt_of(1, 21);  // crosses two windows of 8
  const auto expected = generate_cli(prompt, 12);
  auto alone = post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 12}, {"temperature", 0}});
  EXPECT_EQ(ids_of(alone), expected);
  EXPECT_EQ(alone["usage"]["prompt_tokens"], 21);
  EXPECT_EQ(alone["usage"]["completion_tokens"], 12);
  EXPECT_EQ(alone["choices"][0]["finish_reason"], "length");
  // 16 at once: each its own prompt, all equal to generate's.
  std::vector<std::vector<int64_t>> got(16);
  std::vector<std::string> answer(16);  // what came back instead, when not a 200
  std::vector<std::thread> threads;
  for (int k = 0; k < 16; ++k)
    threads.emplace_back([&, k] {
      auto res = client().Post("/v1/completions",
                               json{{"prompt", prompt_of(k + 1, 5 + 3 * k)}, {"max_tokens", 10}, {"temperature", 0}}.dump(),
                               "application/json");
      if (res && res->status == 200) got[k] = ids_of(json::parse(res->body));
      else answer[k] = res ? std::to_string(res->status) + " " + res->body : "no answer: " + httplib::to_string(res.error());
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < 16; ++k)
    EXPECT_EQ(got[k], generate_cli(prompt_of(k + 1, 5 + 3 * k), 10)) << "stream " << k << " " << answer[k];
  if (HasFailure()) ADD_FAILURE() << "server log: " << test::read_file(log);
}

TEST_F(Serve, StreamingSendsTheSameTokensAndEndsWithDone) {
  start_server();
  const auto prompt = prompt_of(7, 9);
  auto whole = post("/v1/completions", {{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}});
  std::string body;
  auto res = client().Post("/v1/completions",
                           json{{"prompt", prompt}, {"max_tokens", 8}, {"temperature", 0}, {"stream", true}}.dump(),
                           "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::string text;
  json last;
  std::istringstream lines(res->body);
  std::string line, final_line;
  for (; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    final_line = line;
    if (line == "data: [DONE]") continue;
    last = json::parse(line.substr(6));
    text += last["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(final_line, "data: [DONE]");
  EXPECT_EQ(text, whole["choices"][0]["text"].get<std::string>());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last["usage"]["completion_tokens"], 8);
  // Chat, streamed and not: the template's prompt, an assistant message.
  auto chat = post("/v1/chat/completions",
                   {{"messages", {{{"role", "user"}, {"content", "Hello"}}}}, {"max_tokens", 5}, {"temperature", 0}});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  auto tok = post("/tokenize", {{"content", "User: Hello\nAssistant:"}, {"add_special", true}});
  EXPECT_EQ(chat["usage"]["prompt_tokens"], tok["tokens"].size());
  auto sres = client().Post("/v1/chat/completions",
                            json{{"messages", {{{"role", "user"}, {"content", "Hello"}}}}, {"max_tokens", 5},
                                 {"temperature", 0}, {"stream", true}}.dump(),
                            "application/json");
  ASSERT_TRUE(sres);
  EXPECT_NE(sres->body.find("\"role\":\"assistant\""), std::string::npos) << sres->body;
  EXPECT_NE(sres->body.find("chat.completion.chunk"), std::string::npos);
  EXPECT_NE(sres->body.find("data: [DONE]"), std::string::npos);
}

TEST_F(Serve, SessionsContinueExactlyAlsoFromDiskAndAfterARestart) {
  start_server("--max-sessions 1 --sessions-dir " + dir / "sessions");
  const auto p1 = prompt_of(3, 11), p2 = prompt_of(4, 6), p3 = prompt_of(5, 9);
  // Continued in three requests ...
  auto a = post("/v1/completions", {{"prompt", p1}, {"max_tokens", 4}, {"temperature", 0}, {"session", "s1"}});
  // ... another session pushes s1 out of memory onto disk ...
  post("/v1/completions", {{"prompt", p2}, {"max_tokens", 2}, {"temperature", 0}, {"session", "other"}});
  EXPECT_TRUE(fs::exists(dir / "sessions/s1.safetensors"));
  auto b = post("/v1/completions", {{"prompt", std::vector<int64_t>(p2.begin() + 1, p2.end())}, {"max_tokens", 5},
                                    {"temperature", 0}, {"session", "s1"}});
  // ... and after a restart.
  EXPECT_EQ(stop_server(), 0);
  start_server("--max-sessions 1 --sessions-dir " + dir / "sessions");
  auto sessions = json::parse(client().Get("/v1/sessions")->body);
  EXPECT_EQ(sessions["data"].size(), 2u) << sessions.dump();
  auto c = post("/v1/completions", {{"prompt", std::vector<int64_t>(p3.begin() + 1, p3.end())}, {"max_tokens", 6},
                                    {"temperature", 0}, {"session", "s1"}});
  EXPECT_EQ(b["usage"]["prompt_tokens"], 5);  // only the new text is read
  // One request on the whole text: the same last tokens.
  std::vector<int64_t> whole = p1;
  for (auto* part : {&a, &b}) {
    auto ids = ids_of(*part);
    whole.insert(whole.end(), ids.begin(), ids.end());
    if (part == &a) whole.insert(whole.end(), p2.begin() + 1, p2.end());
    else whole.insert(whole.end(), p3.begin() + 1, p3.end());
  }
  EXPECT_EQ(ids_of(c), generate_cli(whole, 6));
  std::vector<int64_t> first_two = p1;
  auto ida = ids_of(a);
  first_two.insert(first_two.end(), ida.begin(), ida.end());
  first_two.insert(first_two.end(), p2.begin() + 1, p2.end());
  EXPECT_EQ(ids_of(b), generate_cli(first_two, 5));
  // Delete: gone from the list and the disk.
  auto del = client().Delete("/v1/sessions/other");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(client().Delete("/v1/sessions/other")->status, 404);
  EXPECT_FALSE(fs::exists(dir / "sessions/other.safetensors"));
  // SIGTERM writes the in-memory session and exits 0.
  EXPECT_EQ(stop_server(), 0);
  EXPECT_TRUE(fs::exists(dir / "sessions/s1.safetensors"));
}

TEST_F(Serve, BadRequestsGetJsonErrorsAndTheServerKeepsServing) {
  start_server("--api-key sekret --max-prompt-tokens 50");
  httplib::Headers auth = {{"Authorization", "Bearer sekret"}};
  auto c = client();
  EXPECT_EQ(c.Get("/health")->status, 200);  // no key needed
  EXPECT_EQ(c.Post("/v1/completions", R"({"prompt": [1, 2]})", "application/json")->status, 401);
  auto expect_400 = [&](const std::string& body, const std::string& words) {
    auto res = c.Post("/v1/completions", auth, body, "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << body;
    auto j = json::parse(res->body);
    EXPECT_NE(j["error"]["message"].get<std::string>().find(words), std::string::npos) << res->body;
  };
  expect_400("{not json", "not valid JSON");
  expect_400(R"({"prompt": [1, 2], "max_tokens": "ten"})", "max_tokens must be an integer");
  expect_400(R"({"prompt": [1, 2], "temperature": 9})", "temperature must be in");
  expect_400(R"({"prompt": [1, 99999999]})", "token ids must be integers in");
  expect_400(R"({"prompt": [1, 2], "model": "gpt-4"})", "unknown model 'gpt-4'");
  expect_400(json{{"prompt", std::vector<int64_t>(60, 5)}}.dump(), "the limit is 50");
  expect_400(R"({"prompt": [1, 2], "session": "../x"})", "session must be");
  expect_400(R"({"max_tokens": 3})", "prompt is required");
  EXPECT_EQ(c.Get("/nowhere", auth)->status, 404);
  // A fuzz of malformed bodies: every answer a 4xx with a JSON error, and the server still answers.
  std::mt19937 rng(11);
  const std::string valid = R"({"prompt": [1, 300, 301], "max_tokens": 2, "temperature": 0.5, "stop": ["x"], "top_k": 3})";
  int answered = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string body = valid;
    for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
      const size_t at = rng() % body.size();
      switch (rng() % 3) {
        case 0: body.erase(at, 1 + rng() % 3); break;
        case 1: body.insert(at, 1, static_cast<char>(rng() % 256)); break;
        default: body[at] = "{}[]\",:0-9e"[rng() % 12]; break;
      }
    }
    auto res = c.Post("/v1/completions", auth, body, "application/json");
    ASSERT_TRUE(res) << "no answer to: " << body;
    if (res->status != 200) {
      EXPECT_GE(res->status, 400) << body;
      EXPECT_LT(res->status, 500) << body << " -> " << res->body;
      EXPECT_TRUE(json::parse(res->body, nullptr, false).contains("error")) << res->body;
    }
    ++answered;
  }
  EXPECT_EQ(answered, 2000);
  auto ok = c.Post("/v1/completions", auth, valid, "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  auto metrics = c.Get("/metrics", auth);
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("bakallm_requests_total"), std::string::npos);
  EXPECT_NE(metrics->body.find("bakallm_request_errors_total"), std::string::npos);
  EXPECT_EQ(stop_server(), 0);
}

TEST_F(Serve, AClientThatLeavesStopsItsGenerationAndThePageIsServed) {
  start_server("--parallel 1");
  // a raw client: sends a streamed request, reads its first bytes, hangs up
  ::close(open_stream({{"prompt", {1, 400}}, {"max_tokens", 4000}, {"stream", true}}));
  // The one stream is free again well before 4000 tokens: a new request is answered.
  auto res = client().Post("/v1/completions", json{{"prompt", {1, 500}}, {"max_tokens", 3}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  auto m = client().Get("/metrics")->body;
  const std::regex re("bakallm_completion_tokens_total ([0-9]+)");
  std::smatch sm;
  ASSERT_TRUE(std::regex_search(m, sm, re)) << m;
  EXPECT_LT(std::stoi(sm[1]), 4000);
  auto page = client().Get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->body.find("/v1/completions"), std::string::npos);
}

// One stream and no queue: a second request while the first runs gets 429; a
// second request on a session in use gets 409; both are answered, not hung.
// The first is held running, whatever the machine's speed: a stream of up to
// a million tokens, its first bytes read, until its client leaves.
TEST_F(Serve, AFullQueueGets429AndABusySession409) {
  start_server("--parallel 1 --queue 0 --max-tokens 1000000");
  const int first =
      open_stream({{"prompt", {1, 400}}, {"max_tokens", 1000000}, {"session", "busy"}, {"stream", true}});
  auto post_short = [&] {  // a request of no session: the stream's to take
    return client().Post("/v1/completions", json{{"prompt", {1, 401}}, {"max_tokens", 2}}.dump(), "application/json");
  };
  auto queued = post_short();
  auto busy = client().Post("/v1/completions", json{{"prompt", {402}}, {"max_tokens", 2}, {"session", "busy"}}.dump(),
                            "application/json");
  ::close(first);
  ASSERT_TRUE(queued && busy);
  EXPECT_EQ(queued->status, 429) << queued->body;
  EXPECT_EQ(json::parse(queued->body)["error"]["type"], "rate_limit_error");
  EXPECT_EQ(busy->status, 409) << busy->body;
  // The stream is freed once the server sees its client gone: until then a request still gets 429.
  auto after = post_short();
  for (int tries = 0; after && after->status == 429 && tries < 600; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    after = post_short();
  }
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200) << after->body;
}

// The playground in a real browser: headless chromium loads `/`, submits a
// prompt and sees the text stream in; the screenshot is kept beside the binary.
TEST_F(Serve, ThePlaygroundStreamsInChromium) {
  const std::string js = std::string(BAKALLM_SOURCE_DIR) + "/tests/js";
  ASSERT_TRUE(fs::exists("/usr/bin/chromium")) << "chromium missing: run scripts/test.sh";
  ASSERT_TRUE(fs::exists(js + "/node_modules/puppeteer-core")) << "npm packages missing: run scripts/test.sh";
  start_server();
  const std::string shot = (fs::path(test::binary()).parent_path() / "playground.png").string();
  fs::remove(shot);
  const std::string cmd = "node " + js + "/playground.mjs http://127.0.0.1:" + std::to_string(port) +
                          "/ /usr/bin/chromium " + shot + " 2>&1";
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  EXPECT_EQ(::pclose(pipe), 0) << out;
  auto j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["status"], "done");
  EXPECT_GT(j["updates"].get<int>(), 1) << "the text did not stream in";
  // The page shows what the API gives for the same request.
  auto api = post("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 24}, {"temperature", 0},
                                      {"top_p", 0.95}, {"top_k", 40}, {"seed", 0}});
  EXPECT_EQ(j["text"], api["choices"][0]["text"]);
  ASSERT_TRUE(fs::exists(shot));
  EXPECT_GT(fs::file_size(shot), 10000u);
}

// The official OpenAI client for Node (npm `openai`, tests/js): completions and
// chat, streamed and not, and a 400 it reports as an APIError.
TEST_F(Serve, TheOfficialOpenAIClientWorks) {
  const std::string js = std::string(BAKALLM_SOURCE_DIR) + "/tests/js";
  ASSERT_TRUE(fs::exists(js + "/node_modules/openai")) << "npm packages missing: run scripts/test.sh (npm ci in tests/js)";
  start_server("--api-key k1");
  const std::string cmd = "node " + js + "/openai_client.mjs http://127.0.0.1:" + std::to_string(port) + "/v1 k1 2>&1";
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << out;
  auto j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["completion"], j["completion_streamed"]);
  EXPECT_EQ(j["completion_usage"]["completion_tokens"], 8);
  EXPECT_EQ(j["chat_role"], "assistant");
  EXPECT_EQ(j["chat"], j["chat_streamed"]);
  EXPECT_EQ(j["bad_request"]["status"], 400);
}

}  // namespace
}  // namespace bakallm
