#include "infer/generate.h"

#include "data/tokenizer.h"
#include "infer/decoder.h"
#include "util/clock.h"
#include "util/error.h"

namespace bakallm {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "length";
}

TextStream::TextStream(const Tokenizer* tokenizer, std::vector<std::string> stops)
    : tok_(tokenizer), stops_(std::move(stops)) {}

namespace {
// TEXT ends inside a character: a UTF-8 sequence cut short, or the
// replacement character a decoder writes for one.
bool ends_mid_character(const std::string& text) {
  static const std::string replacement = "\xEF\xBF\xBD";
  if (text.size() >= 3 && text.compare(text.size() - 3, 3, replacement) == 0) return true;
  for (size_t back = 1; back <= std::min<size_t>(4, text.size()); ++back) {
    const auto c = static_cast<unsigned char>(text[text.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return length > back;
  }
  return false;
}
}  // namespace

std::string TextStream::decode_from(size_t first) const {
  return tok_->decode(std::vector<uint32_t>(ids_.begin() + static_cast<std::ptrdiff_t>(first), ids_.end()));
}

std::optional<std::string> TextStream::pending_text() const {
  const std::string decoded = decode_from(context_);
  if (decoded.compare(0, context_text_.size(), context_text_) == 0) return decoded.substr(context_text_.size());
  const std::string whole = decode_from(0);  // the context decodes differently inside the stream: from the start
  if (whole.compare(0, text_.size(), text_) == 0) return whole.substr(text_.size());
  return std::nullopt;
}

void TextStream::append_final(const std::string& added) {
  const size_t before = text_.size();
  text_ += added;
  context_ = read_;
  read_ = ids_.size();
  context_text_ = decode_from(context_);
  size_t cut = std::string::npos;
  for (const auto& s : stops_)  // a stop string that ends in the new text: searched from where it could start
    if (!s.empty()) cut = std::min(cut, text_.find(s, before >= s.size() ? before - s.size() + 1 : 0));
  if (cut != std::string::npos) {
    text_.resize(cut);
    stopped_ = true;
  }
}

std::string TextStream::add(int64_t id) {
  if (!tok_ || stopped_) return "";
  ids_.push_back(static_cast<uint32_t>(id));
  // Only the pieces since the last final text are decoded, after the pieces
  // before them for context (a piece's leading space, the bytes of one
  // character): a token costs the same at any length of the stream.
  const auto added = pending_text();
  if (!added || added->empty() || ends_mid_character(context_text_ + *added)) return "";  // wait for the next piece
  append_final(*added);
  size_t safe = text_.size();
  if (!stopped_) {
    for (const auto& s : stops_)  // a tail that may grow into a stop string waits
      for (size_t k = std::min(s.size() - 1, text_.size()); k > 0; --k)
        if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
          safe = std::min(safe, text_.size() - k);
          break;
        }
  }
  if (safe <= emitted_) return "";
  auto out = text_.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return out;
}

std::string TextStream::flush() {
  if (tok_ && !stopped_ && read_ < ids_.size())  // pieces still waiting: a character cut short at the end
    if (const auto added = pending_text()) append_final(*added);
  if (emitted_ >= text_.size()) return "";
  auto out = text_.substr(emitted_);
  emitted_ = text_.size();
  return out;
}

std::vector<Generation> generate(BakaLM& model, const Tokenizer* tok, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& o, const TokenCallback& on_token, int64_t first_row) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  if (B == 0) return {};
  const int64_t T = static_cast<int64_t>(prompts[0].size());
  if (T == 0) throw Error("generate: an empty prompt (give at least BOS)");
  auto ids = torch::empty({B, T}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    if (static_cast<int64_t>(prompts[b].size()) != T) throw Error("generate: prompts of one batch differ in length");
    std::copy(prompts[b].begin(), prompts[b].end(), ids[b].data_ptr<int64_t>());
  }
  std::vector<Generation> out(B);
  std::vector<Sampler> samplers;
  std::vector<TextStream> streams;
  for (int64_t b = 0; b < B; ++b) {
    auto s = o.sampling;
    s.seed += static_cast<uint64_t>(b);
    samplers.emplace_back(s);
    streams.emplace_back(tok, o.stops);
    out[b].prompt_tokens = T;
  }
  std::vector<std::vector<int64_t>> history = prompts;
  std::vector<bool> done(B, o.max_new <= 0);
  const bool was_training = model->is_training();
  model->eval();
  Decoder decoder(model, B);
  auto t0 = Clock::now();
  auto logits = decoder.feed(ids);  // [B, V]
  const double prefill = seconds_since(t0);
  t0 = Clock::now();
  for (int64_t step = 0; step < o.max_new; ++step) {
    auto next = torch::zeros({B, 1}, torch::kLong);  // a finished row reads 0 (its output is unused)
    int64_t* next_ids = next.data_ptr<int64_t>();     // written in place: no indexing op a row
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      auto& g = out[b];
      const int64_t id = samplers[b].sample(logits[b], history[b]);
      next_ids[b] = id;
      history[b].push_back(id);
      g.ids.push_back(id);
      std::string piece = streams[b].add(id);
      const bool eos = tok && o.stop_at_eos && id == static_cast<int64_t>(tok->eos_id());
      if (streams[b].stopped() || eos) {
        g.finish = FinishReason::kStop;
        done[b] = true;
      } else if (static_cast<int64_t>(g.ids.size()) == o.max_new) {
        done[b] = true;
      }
      if (done[b]) piece += streams[b].flush();
      if (on_token && !on_token(first_row + b, id, piece)) {
        if (!done[b]) g.finish = FinishReason::kCancelled;
        done[b] = true;
      }
      all_done = all_done && done[b];
    }
    if (all_done) break;
    logits = decoder.feed(next);
  }
  const double decode = seconds_since(t0);
  if (was_training) model->train();
  for (int64_t b = 0; b < B; ++b) {
    out[b].text = streams[b].text();
    out[b].prefill_seconds = prefill;
    out[b].decode_seconds = decode;
  }
  return out;
}

std::vector<Generation> generate_each(BakaLM& model, const Tokenizer* tok, const std::vector<std::vector<int64_t>>& prompts,
                                      const GenerateOptions& o, int64_t batch, const TokenCallback& on_token) {
  std::vector<Generation> all;
  for (size_t start = 0; start < prompts.size();) {
    size_t end = start + 1;
    while (end < prompts.size() && static_cast<int64_t>(end - start) < batch &&
           prompts[end].size() == prompts[start].size())
      ++end;
    const std::vector<std::vector<int64_t>> group(prompts.begin() + start, prompts.begin() + end);
    for (auto& g : generate(model, tok, group, o, on_token, static_cast<int64_t>(start))) all.push_back(std::move(g));
    start = end;
  }
  return all;
}

}  // namespace bakallm
