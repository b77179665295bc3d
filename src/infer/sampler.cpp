#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
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

std::vector<int64_t> sampling_support(const float* p, int64_t V, const SamplingOptions& o) {
  std::vector<int64_t> kept;
  if (o.top_k == 0 && o.top_p >= 1 && o.min_p == 0) {  // no filter: every token, in id order
    kept.resize(static_cast<size_t>(V));
    std::iota(kept.begin(), kept.end(), int64_t{0});
    return kept;
  }
  // Each filter keeps a prefix of the tokens ordered by descending
  // probability (ties by id), so applying them one after another keeps the
  // shortest. Sorting all V (32000) tokens cost milliseconds a token; the
  // prefixes are found by selection instead, in O(V). A token's place in the
  // order is one integer: a probability's bits order as the float does (it is
  // >= 0), inverted for descending, then the id, so no two tokens tie.
  std::vector<uint64_t> order;  // over the candidates
  order.reserve(static_cast<size_t>(V));
  const float p_max = *std::max_element(p, p + V);
  const double min_p_at = o.min_p * static_cast<double>(p_max);
  for (int64_t i = 0; i < V; ++i) {
    if (std::isnan(p[i]) || (o.min_p > 0 && !(p[i] >= min_p_at))) continue;  // min-p: those at min_p_at or above
    uint32_t bits;
    std::memcpy(&bits, &p[i], sizeof bits);
    order.push_back(static_cast<uint64_t>(~bits) << 32 | static_cast<uint32_t>(i));
  }
  const auto prob = [p](uint64_t key) { return p[static_cast<uint32_t>(key)]; };
  if (o.top_k > 0 && o.top_k < static_cast<int64_t>(order.size())) {
    std::nth_element(order.begin(), order.begin() + o.top_k, order.end());
    order.resize(static_cast<size_t>(o.top_k));
  }
  if (o.top_p < 1) {  // the shortest prefix whose mass reaches top_p
    size_t lo = 0, hi = order.size();  // the prefix ends in (lo, hi]; [0, lo) holds less than top_p
    double mass = 0;                   // of [0, lo)
    while (hi - lo > 32) {             // halve: [lo, mid) gets the first keys of [lo, hi)
      const size_t mid = lo + (hi - lo) / 2;
      std::nth_element(order.begin() + static_cast<ptrdiff_t>(lo), order.begin() + static_cast<ptrdiff_t>(mid),
                       order.begin() + static_cast<ptrdiff_t>(hi));
      double half = 0;
      for (size_t i = lo; i < mid; ++i) half += prob(order[i]);
      if (mass + half >= o.top_p) {
        hi = mid;
      } else {
        mass += half;
        lo = mid;
      }
    }
    std::sort(order.begin() + static_cast<ptrdiff_t>(lo), order.begin() + static_cast<ptrdiff_t>(hi));
    size_t end = hi;
    for (size_t i = lo; i < hi; ++i)
      if ((mass += prob(order[i])) >= o.top_p) {
        end = i + 1;
        break;
      }
    order.resize(end);
  }
  kept.reserve(order.size());
  for (uint64_t key : order) kept.push_back(static_cast<uint32_t>(key));
  return kept;
}

Sampler::Sampler(SamplingOptions options) : o_(options), rng_(options.seed) { o_.validate(); }

int64_t Sampler::sample(const torch::Tensor& logits_in, const std::vector<int64_t>& history) {
  auto logits = logits_in.detach().to(torch::kCPU, torch::kFloat).contiguous();  // [V]
  const int64_t V = logits.numel();
  if (o_.repeat_penalty != 1.0) {
    logits = logits.clone();  // the caller's logits stay as they were
    float* l = logits.data_ptr<float>();
    std::unordered_set<int64_t> seen(history.begin(), history.end());
    for (int64_t id : seen)
      if (id >= 0 && id < V) l[id] = l[id] > 0 ? l[id] / o_.repeat_penalty : l[id] * o_.repeat_penalty;
  }
  if (o_.temperature == 0) {  // the first largest, NaN above all (as torch.argmax); one pass, no libtorch op
    const float* l = logits.data_ptr<float>();
    int64_t best = 0;
    for (int64_t i = 0; i < V; ++i) {
      if (std::isnan(l[i])) return i;
      if (l[i] > l[best]) best = i;
    }
    return best;
  }
  const auto probs = torch::softmax(logits / o_.temperature, 0);  // [V]
  const float* p = probs.data_ptr<float>();
  const auto kept = sampling_support(p, V, o_);
  double total = 0;
  for (int64_t i : kept) total += p[i];
  if (!(total > 0)) throw Error("sampling: the model's logits are NaN, no token has a probability");
  double u = std::uniform_real_distribution<double>(0, total)(rng_);
  for (int64_t i : kept)
    if ((u -= p[i]) <= 0) return i;
  return kept.back();
}

}  // namespace bakallm
