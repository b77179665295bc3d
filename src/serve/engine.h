// The server's engine: one worker thread owns the model and runs up to
// `parallel` streams at once. Each step it advances every active stream: a
// stream still reading its prompt reads up to the next window boundary (so a
// long prompt never stalls the others for more than one window), a stream
// that is generating samples one token; then the sampled tokens of all
// streams are read together, as rows of one batch (Decoder::feed_together:
// one product per weight for all of them). Requests join and leave between
// steps. Each stream has its own incremental Decoder, with its own window and
// cache, so its tokens equal `bakallm generate`'s whatever else runs.
//
// Sessions: a request naming a session continues its stream. After a
// request the stream's state (BakaLLM: memory and one window of cache per
// layer, a fixed size) is kept with the last sampled token still to read;
// the next request reads only its new prompt. Past `max_sessions` the least
// recently used are written to `sessions_dir` (the state at the last window
// boundary and the stream's tokens, safetensors, atomically) and read back
// when named again, also by a new server: the tokens after the boundary are
// read again to reopen the window.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"
#include "infer/decoder.h"
#include "model/baka_lm.h"
#include "serve/api.h"

namespace bakallm {

struct EngineOptions {
  int64_t parallel = 4;       // streams decoded at once
  int64_t queue = 64;         // requests waiting beyond those (more: 429)
  int64_t max_sessions = 64;  // kept in memory; older ones go to sessions_dir (or are dropped without it)
  std::string sessions_dir;   // "" : sessions live in memory only
};

struct TokenEvent {
  int64_t id = 0;
  std::string text;  // text that became final with this token (stop strings held back)
  double logprob = 0;
  std::vector<std::pair<int64_t, double>> top;  // alternatives, when asked
};

// One request, shared by its HTTP handler and the engine.
class Job {
 public:
  explicit Job(CompletionRequest r) : request(std::move(r)) {}
  const CompletionRequest request;

  // The handler's side: waits for the next events (up to TIMEOUT); false when
  // nothing came. Once finished() and no event is left, the job is over.
  bool next(std::vector<TokenEvent>& out, std::chrono::milliseconds timeout);
  bool finished();
  void cancel() { cancelled_ = true; }

  // Set by the engine before it finishes the job.
  FinishReason finish = FinishReason::kLength;
  std::string error;          // not empty: the job failed (answered 500)
  int64_t prompt_tokens = 0, completion_tokens = 0;

 private:
  friend class Engine;
  void push(TokenEvent e);
  void close();
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<TokenEvent> events_;
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
};

struct SessionInfo {
  std::string id;
  int64_t tokens = 0;  // read and generated so far (0 while in use)
  bool in_memory = false;
  bool in_use = false;  // a request is running on it
};

struct EngineStats {
  int64_t requests = 0, prompt_tokens = 0, completion_tokens = 0;
  double decode_seconds = 0;  // worker time spent on generated tokens
  int64_t active = 0, queued = 0, sessions_in_memory = 0, sessions_on_disk = 0;
};

class Engine {
 public:
  Engine(BakaLM model, const Tokenizer* tokenizer, EngineOptions options);
  ~Engine();  // stop()

  // Queues a request; ApiError 429 when the queue is full, 409 when its
  // session is in use by another request, 503 once stopping.
  std::shared_ptr<Job> submit(CompletionRequest request);
  bool session_exists(const std::string& id);
  std::vector<SessionInfo> sessions();
  bool delete_session(const std::string& id);  // false when unknown or in use
  EngineStats stats();

  // Cancels queued and running requests, writes every in-memory session to
  // sessions_dir (when set), and joins the worker.
  void stop();

 private:
  struct Stream;  // a Decoder and what a session keeps
  struct Slot;
  void loop();
  // What a slot's step leaves: its job is over (free_slot closes it), it has
  // more to do, or it sampled a token that must be read (read_sampled).
  enum class Next { kDone, kMore, kRead };
  Next step(Slot& slot);
  void read_sampled(const std::vector<Slot*>& slots);  // their sampled tokens, as rows of one batch
  void finish(Slot& slot, FinishReason reason);     // the job's last events; its session kept
  void fail(Job& job, const std::exception& e);    // answered 500; its session is free again
  void free_slot(std::unique_ptr<Slot>& slot);     // empties the slot, then closes its job
  void release(const std::string& session);        // a request is done with it ("" : none)
  std::vector<std::string> ids_on_disk() const;    // sessions in sessions_dir
  void add_decode_time(double seconds);
  std::unique_ptr<Stream> take_session(const std::string& id);  // from memory or disk; null if none
  void keep_session(const std::string& id, std::unique_ptr<Stream> s);
  void evict_locked();
  void save(const std::string& id, const Stream& s) const;
  std::unique_ptr<Stream> load(const std::string& id) const;
  std::string session_path(const std::string& id) const;

  BakaLM model_;
  const Tokenizer* tok_;
  EngineOptions o_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::list<std::pair<std::string, std::unique_ptr<Stream>>> sessions_;  // most recently used first
  std::map<std::string, bool> busy_;  // sessions in use by a running or queued request
  std::vector<std::unique_ptr<Slot>> slots_;
  EngineStats stats_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace bakallm
