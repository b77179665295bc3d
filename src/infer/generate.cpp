#include "infer/generate.h"

namespace bakallm {

std::vector<int64_t> generate_rerun(BakaLM& model, const std::vector<int64_t>& prompt, int64_t max_new,
                                    Sampler& sampler, const std::function<bool(int64_t)>& on_token) {
  torch::NoGradGuard no_grad;
  const auto device = model->embed_out->weight.device();
  std::vector<int64_t> context = prompt, out;
  for (int64_t i = 0; i < max_new; ++i) {
    auto ids = torch::tensor(context, torch::kLong).unsqueeze(0).to(device);  // [1, T]
    auto logits = model(ids).logits[0][-1];                                   // [V]
    const int64_t next = sampler.sample(logits, context);
    context.push_back(next);
    out.push_back(next);
    if (on_token && !on_token(next)) break;
  }
  return out;
}

}  // namespace bakallm
