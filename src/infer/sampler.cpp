#include "infer/sampler.h"

#include <cmath>
#include <unordered_set>

#include "util/error.h"

namespace bakallm {

void SamplingOptions::validate() const {
  if (!(temperature >= 0 && std::isfinite(temperature)))
    throw Error("--temperature must be a finite number >= 0, got " + std::to_string(temperature));
  if (top_k < 0) throw Error("--top-k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) throw Error("--top-p must be in (0, 1], got " + std::to_string(top_p));
  if (!(min_p >= 0 && min_p < 1)) throw Error("--min-p must be in [0, 1), got " + std::to_string(min_p));
  if (!(repeat_penalty > 0 && std::isfinite(repeat_penalty))) throw Error("--repeat-penalty must be a finite number > 0");
}

Sampler::Sampler(SamplingOptions options) : o_(options), rng_(options.seed) { o_.validate(); }

int64_t Sampler::sample(const torch::Tensor& logits_in, const std::vector<int64_t>& history) {
  auto logits = logits_in.detach().to(torch::kCPU, torch::kFloat).contiguous().clone();  // [V]
  float* l = logits.data_ptr<float>();
  const int64_t V = logits.numel();
  if (o_.repeat_penalty != 1.0) {
    std::unordered_set<int64_t> seen(history.begin(), history.end());
    for (int64_t id : seen)
      if (id >= 0 && id < V) l[id] = l[id] > 0 ? l[id] / o_.repeat_penalty : l[id] * o_.repeat_penalty;
  }
  if (o_.temperature == 0) return logits.argmax().item<int64_t>();
  auto probs = torch::softmax(logits / o_.temperature, 0);  // [V]
  auto [sorted, index] = probs.sort(0, /*descending=*/true);
  int64_t keep = V;
  if (o_.top_k > 0) keep = std::min(keep, o_.top_k);
  if (o_.top_p < 1) {  // smallest prefix whose mass reaches top_p
    auto cum = sorted.cumsum(0);
    keep = std::min(keep, cum.lt(o_.top_p).sum().item<int64_t>() + 1);
  }
  if (o_.min_p > 0) keep = std::min(keep, std::max<int64_t>(1, sorted.ge(o_.min_p * sorted[0].item<float>()).sum().item<int64_t>()));
  auto kept = sorted.narrow(0, 0, keep);
  const float* p = kept.data_ptr<float>();
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += p[i];
  double u = std::uniform_real_distribution<double>(0, total)(rng_);
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[i];
    if (u <= 0) return index[i].item<int64_t>();
  }
  return index[keep - 1].item<int64_t>();
}

}  // namespace bakallm
