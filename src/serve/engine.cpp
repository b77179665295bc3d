#include "serve/engine.h"

#include <algorithm>
#include <filesystem>

#include "io/safetensors.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/mapped_file.h"
#include "util/strings.h"

namespace fs = std::filesystem;

namespace bakallm {

// ---- Job ----

void Job::push(TokenEvent e) {
  std::lock_guard<std::mutex> lock(m_);
  events_.push_back(std::move(e));
  cv_.notify_all();
}

void Job::close() {
  std::lock_guard<std::mutex> lock(m_);
  done_ = true;
  cv_.notify_all();
}

bool Job::next(std::vector<TokenEvent>& out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(m_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty() || done_; });
  if (events_.empty()) return false;
  while (!events_.empty()) {
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return true;
}

bool Job::finished() {
  std::lock_guard<std::mutex> lock(m_);
  return done_ && events_.empty();
}

// ---- Engine ----

struct Engine::Stream {
  std::unique_ptr<Decoder> decoder;
  std::vector<int64_t> history;  // every token read or generated (the repeat penalty's)
  std::vector<int64_t> pending;  // generated but not read yet (the last sampled token)
  int64_t tokens = 0;            // read and generated
};

struct Engine::Slot {
  std::shared_ptr<Job> job;
  std::unique_ptr<Stream> stream;
  std::vector<int64_t> unread;   // tokens still to read before sampling
  size_t at = 0;                 // of unread
  torch::Tensor logits;          // [V] after the last token read
  std::optional<Sampler> sampler;
  std::optional<TextStream> text;
  int64_t generated = 0;
  int64_t sampled = -1;          // sampled, to be read with the other streams' (Next::kRead)
  bool generating() const { return at >= unread.size(); }
};

Engine::Engine(BakaLM model, const Tokenizer* tokenizer, EngineOptions options)
    : model_(std::move(model)), tok_(tokenizer), o_(std::move(options)) {
  model_->eval();
  if (!o_.sessions_dir.empty()) fs::create_directories(o_.sessions_dir);
  slots_.resize(static_cast<size_t>(o_.parallel));
  worker_ = std::thread([this] { loop(); });
}

Engine::~Engine() { stop(); }

std::string Engine::session_path(const std::string& id) const { return o_.sessions_dir + "/" + id + ".safetensors"; }

bool Engine::session_exists(const std::string& id) {
  std::lock_guard<std::mutex> lock(m_);
  for (const auto& s : sessions_)
    if (s.first == id) return true;
  if (busy_.count(id)) return true;
  return !o_.sessions_dir.empty() && fs::exists(session_path(id));
}

std::shared_ptr<Job> Engine::submit(CompletionRequest request) {
  std::lock_guard<std::mutex> lock(m_);
  if (stopping_) throw ApiError(503, "the server is shutting down", "", "server_error");
  if (!request.session.empty()) {
    if (busy_.count(request.session))
      throw ApiError(409, "session '" + request.session + "' is in use by another request", "session");
  }
  int64_t free_slots = 0;  // requests there will take at once, beyond those waiting
  for (const auto& slot : slots_) free_slots += slot == nullptr;
  if (static_cast<int64_t>(queue_.size()) >= o_.queue + free_slots)
    throw ApiError(429, "too many requests are waiting (" + std::to_string(o_.queue) + "); try again later", "",
                   "rate_limit_error");
  if (!request.session.empty()) busy_[request.session] = true;
  auto job = std::make_shared<Job>(std::move(request));
  queue_.push_back(job);
  ++stats_.requests;
  cv_.notify_all();
  return job;
}

std::vector<std::string> Engine::ids_on_disk() const {
  std::vector<std::string> ids;
  if (o_.sessions_dir.empty() || !fs::exists(o_.sessions_dir)) return ids;
  const std::string ext = ".safetensors";
  for (const auto& e : fs::directory_iterator(o_.sessions_dir)) {
    const auto name = e.path().filename().string();
    if (!ends_with(name, ext)) continue;
    const auto id = name.substr(0, name.size() - ext.size());
    if (valid_session_id(id)) ids.push_back(id);
  }
  return ids;
}

std::vector<SessionInfo> Engine::sessions() {
  std::lock_guard<std::mutex> lock(m_);
  std::map<std::string, SessionInfo> out;
  for (const auto& id : ids_on_disk()) {
    try {  // the header alone: its metadata counts the tokens
      const MappedFile file(session_path(id));
      const auto header = parse_safetensors_header(file.data(), file.size(), file.path());
      out[id] = SessionInfo{id, std::stoll(header.metadata.at("tokens")), false, false};
    } catch (...) {
      continue;  // not a session file
    }
  }
  for (const auto& [id, s] : sessions_) out[id] = SessionInfo{id, s->tokens, true, false};
  for (const auto& [id, busy] : busy_) {
    auto& info = out[id];
    info.id = id;
    info.in_use = true;
  }
  std::vector<SessionInfo> v;
  for (auto& [id, info] : out) v.push_back(info);
  return v;
}

bool Engine::delete_session(const std::string& id) {
  std::lock_guard<std::mutex> lock(m_);
  if (busy_.count(id)) return false;
  bool found = false;
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
    if (it->first == id) {
      sessions_.erase(it);
      found = true;
      break;
    }
  if (!o_.sessions_dir.empty()) found = fs::remove(session_path(id)) || found;
  return found;
}

EngineStats Engine::stats() {
  std::lock_guard<std::mutex> lock(m_);
  EngineStats s = stats_;
  s.queued = static_cast<int64_t>(queue_.size());
  s.active = 0;
  for (const auto& slot : slots_) s.active += slot != nullptr;
  s.sessions_in_memory = static_cast<int64_t>(sessions_.size());
  s.sessions_on_disk = static_cast<int64_t>(ids_on_disk().size());
  return s;
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(m_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    for (auto& job : queue_) job->cancel();
    for (auto& slot : slots_)
      if (slot) slot->job->cancel();
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(m_);
  if (!o_.sessions_dir.empty())
    for (const auto& [id, s] : sessions_) save(id, *s);
}

void Engine::save(const std::string& id, const Stream& s) const {
  std::vector<std::pair<std::string, torch::Tensor>> t;
  const auto& boundary = s.decoder->boundary_state();
  for (auto& [name, tensor] : boundary.tensors()) t.emplace_back("state." + name, tensor);
  auto ids = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); };
  t.emplace_back("history", ids(s.history));
  t.emplace_back("pending", ids(s.pending));
  write_safetensors(session_path(id), t,
                    {{"tokens", std::to_string(s.tokens)},
                     {"seen", std::to_string(boundary.seen)},
                     {"windows", std::to_string(boundary.windows)},
                     {"config", config_to_json(model_->config()).dump()}});
}

std::unique_ptr<Engine::Stream> Engine::load(const std::string& id) const {
  const auto path = session_path(id);
  auto f = read_safetensors(path);
  if (f.metadata["config"] != config_to_json(model_->config()).dump())
    throw ApiError(409, "session '" + id + "' was made by another model", "session");
  std::map<std::string, torch::Tensor> state;
  for (auto& [name, tensor] : f.tensors)
    if (name.rfind("state.", 0) == 0) state[name.substr(6)] = tensor;
  const auto device = model_->embed_out->weight.device();
  State boundary = State::from_tensors(state, model_->config().num_layers, path).to(device);
  boundary.seen = std::stoll(f.metadata.at("seen"));
  boundary.windows = std::stoll(f.metadata.at("windows"));
  const int64_t seen = boundary.seen;
  auto s = std::make_unique<Stream>();
  s->decoder = std::make_unique<Decoder>(model_, 1, std::move(boundary));
  auto vec = [](const torch::Tensor& t) { return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()); };
  s->history = vec(f.tensors.at("history"));
  s->pending = vec(f.tensors.at("pending"));
  s->tokens = std::stoll(f.metadata.at("tokens"));
  // The open window again: the tokens read after the boundary (history holds
  // every token of the stream; the pending ones are not read yet).
  const int64_t read = static_cast<int64_t>(s->history.size() - s->pending.size());
  if (read > seen)
    s->decoder->feed(torch::tensor(std::vector<int64_t>(s->history.begin() + seen, s->history.begin() + read),
                                   torch::kLong).reshape({1, -1}));
  return s;
}

std::unique_ptr<Engine::Stream> Engine::take_session(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(m_);
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
      if (it->first == id) {
        auto s = std::move(it->second);
        sessions_.erase(it);
        return s;
      }
  }
  if (o_.sessions_dir.empty() || !fs::exists(session_path(id))) return nullptr;
  auto s = load(id);
  fs::remove(session_path(id));  // it lives in memory again; written back when evicted or at exit
  return s;
}

void Engine::keep_session(const std::string& id, std::unique_ptr<Stream> s) {
  std::lock_guard<std::mutex> lock(m_);
  sessions_.emplace_front(id, std::move(s));
  busy_.erase(id);
  evict_locked();
}

void Engine::evict_locked() {
  while (static_cast<int64_t>(sessions_.size()) > o_.max_sessions) {
    auto& [id, s] = sessions_.back();
    if (!o_.sessions_dir.empty()) save(id, *s);
    sessions_.pop_back();
  }
}

void Engine::release(const std::string& session) {
  if (session.empty()) return;
  std::lock_guard<std::mutex> lock(m_);
  busy_.erase(session);
}

void Engine::fail(Job& job, const std::exception& e) {
  job.error = e.what();
  release(job.request.session);
}

void Engine::free_slot(std::unique_ptr<Slot>& slot) {
  const auto job = slot->job;
  {
    std::lock_guard<std::mutex> lock(m_);
    stats_.completion_tokens += slot->generated;
    slot.reset();
  }
  job->close();  // only now: a request its client sends next finds the stream free
}

void Engine::finish(Slot& slot, FinishReason reason) {
  auto& job = *slot.job;
  job.finish = reason;
  job.completion_tokens = slot.generated;
  if (slot.text) {
    auto rest = slot.text->flush();
    if (!rest.empty()) job.push(TokenEvent{-1, rest, 0, {}});
  }
  const auto& session = job.request.session;
  if (!session.empty() && slot.stream) {
    // What was not read yet stays pending: the next request reads it first.
    slot.stream->pending.assign(slot.unread.begin() + static_cast<std::ptrdiff_t>(slot.at), slot.unread.end());
    keep_session(session, std::move(slot.stream));
  } else {
    release(session);
  }
}

void Engine::add_decode_time(double seconds) {
  std::lock_guard<std::mutex> lock(m_);
  stats_.decode_seconds += seconds;
}

Engine::Next Engine::step(Slot& slot) {
  auto& job = *slot.job;
  const auto& r = job.request;
  if (job.cancelled_) {
    finish(slot, FinishReason::kCancelled);
    return Next::kDone;
  }
  if (!slot.generating()) {  // reading: up to the next window boundary
    const int64_t W = model_->config().window_size;
    const int64_t in_window = slot.stream->decoder->tokens() % W;
    const int64_t take = std::min<int64_t>(W - in_window, static_cast<int64_t>(slot.unread.size() - slot.at));
    auto ids = torch::tensor(std::vector<int64_t>(slot.unread.begin() + slot.at, slot.unread.begin() + slot.at + take),
                             torch::kLong).reshape({1, take});
    slot.logits = slot.stream->decoder->feed(ids)[0];
    slot.at += take;
    slot.stream->tokens += take;
    if (slot.at < slot.unread.size()) return Next::kMore;
    slot.unread.clear();
    slot.at = 0;
    if (r.options.max_new == 0) {
      finish(slot, FinishReason::kLength);
      return Next::kDone;
    }
    return Next::kMore;
  }
  // Generating: sample one token; the loop reads it with the other streams'.
  const int64_t id = slot.sampler->sample(slot.logits, slot.stream->history);
  TokenEvent e;
  e.id = id;
  if (r.logprobs >= 0) {
    auto lp = torch::log_softmax(slot.logits.to(torch::kFloat), -1);
    e.logprob = lp[id].item<double>();
    if (r.logprobs > 0) {
      auto top = lp.topk(r.logprobs);
      for (int64_t k = 0; k < r.logprobs; ++k)
        e.top.emplace_back(std::get<1>(top)[k].item<int64_t>(), std::get<0>(top)[k].item<double>());
    }
  }
  e.text = slot.text->add(id);
  slot.stream->history.push_back(id);
  ++slot.generated;
  const bool eos = tok_ && r.options.stop_at_eos && id == static_cast<int64_t>(tok_->eos_id());
  const bool stop = slot.text->stopped() || eos;
  const bool length = slot.generated >= r.options.max_new;
  job.push(std::move(e));
  if (stop || length) {
    slot.unread = {id};  // generated, not read: pending for a session
    slot.at = 0;
    slot.stream->tokens += 1;
    finish(slot, stop ? FinishReason::kStop : FinishReason::kLength);
    return Next::kDone;
  }
  slot.sampled = id;
  return Next::kRead;
}

void Engine::read_sampled(const std::vector<Slot*>& slots) {
  std::vector<Decoder*> decoders;
  std::vector<int64_t> ids;
  for (auto* s : slots) {
    decoders.push_back(s->stream->decoder.get());
    ids.push_back(s->sampled);
  }
  const auto logits = Decoder::feed_together(decoders, torch::tensor(ids, torch::kLong));  // [S, V]
  for (size_t j = 0; j < slots.size(); ++j) {
    slots[j]->logits = logits[static_cast<int64_t>(j)];
    slots[j]->stream->tokens += 1;
  }
}

void Engine::loop() {
  c10::InferenceMode inference;
  while (true) {
    // Admit queued requests into free slots.
    {
      std::unique_lock<std::mutex> lock(m_);
      auto active = [&] {
        for (const auto& s : slots_)
          if (s) return true;
        return false;
      };
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty() || active(); });
      if (stopping_ && !active()) {
        for (auto& job : queue_) {
          job->finish = FinishReason::kCancelled;
          if (!job->request.session.empty()) busy_.erase(job->request.session);
          job->close();
        }
        queue_.clear();
        return;
      }
      for (auto& s : slots_)
        if (!s && !queue_.empty()) {
          s = std::make_unique<Slot>();
          s->job = queue_.front();
          queue_.pop_front();
        }
    }
    for (auto& s : slots_) {
      if (!s || s->stream) continue;
      auto& job = *s->job;
      const auto& r = job.request;
      try {
        if (!r.session.empty()) s->stream = take_session(r.session);
      } catch (const std::exception& e) {
        fail(job, e);
        free_slot(s);
        continue;
      }
      if (!s->stream) {
        s->stream = std::make_unique<Stream>();
        s->stream->decoder = std::make_unique<Decoder>(model_, 1);
      }
      s->unread = s->stream->pending;
      s->stream->pending.clear();
      s->unread.insert(s->unread.end(), r.prompt.begin(), r.prompt.end());
      s->stream->history.insert(s->stream->history.end(), r.prompt.begin(), r.prompt.end());
      job.prompt_tokens = static_cast<int64_t>(r.prompt.size());
      s->sampler.emplace(r.options.sampling);
      s->text.emplace(tok_, r.options.stops);
      std::lock_guard<std::mutex> lock(m_);
      stats_.prompt_tokens += job.prompt_tokens;
    }
    // Each stream's step; those that sampled a token read it together, as
    // rows of one batch.
    std::vector<Slot*> sampled;
    double decode_seconds = 0;  // spent on generated tokens (the metrics' tokens/s)
    for (auto& s : slots_) {
      if (!s) continue;
      const auto t0 = Clock::now();
      const bool generating = s->generating();
      Next next = Next::kDone;
      try {
        next = step(*s);
      } catch (const std::exception& e) {
        fail(*s->job, e);
      }
      if (generating) decode_seconds += seconds_since(t0);
      if (next == Next::kRead) sampled.push_back(s.get());
      if (next == Next::kDone) free_slot(s);
    }
    if (!sampled.empty()) {
      const auto t0 = Clock::now();
      try {
        read_sampled(sampled);
      } catch (const std::exception& e) {
        for (auto& s : slots_)
          if (s && std::find(sampled.begin(), sampled.end(), s.get()) != sampled.end()) {
            fail(*s->job, e);
            free_slot(s);
          }
      }
      decode_seconds += seconds_since(t0);
    }
    add_decode_time(decode_seconds);
  }
}

}  // namespace bakallm
