#include "infer/generate.h"

#include "infer/decoder.h"

namespace bakallm {

std::vector<int64_t> generate(BakaLM& model, const std::vector<int64_t>& prompt, int64_t max_new, Sampler& sampler,
                              const std::function<bool(int64_t)>& on_token) {
  std::vector<int64_t> context = prompt, out;
  if (prompt.empty() || max_new <= 0) return out;
  Decoder decoder(model, 1);
  auto logits = decoder.feed(torch::tensor(prompt, torch::kLong).unsqueeze(0));  // [1, V]
  for (int64_t i = 0; i < max_new; ++i) {
    const int64_t next = sampler.sample(logits[0], context);
    context.push_back(next);
    out.push_back(next);
    if ((on_token && !on_token(next)) || i + 1 == max_new) break;
    logits = decoder.feed(torch::tensor({next}, torch::kLong).unsqueeze(0));
  }
  return out;
}

}  // namespace bakallm
