// Text generation from a prompt with the incremental Decoder.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/sampler.h"
#include "model/baka_lm.h"

namespace bakallm {

// Generates up to MAX_NEW tokens after PROMPT (token ids, BOS included by the
// caller), calling ON_TOKEN for each; stops early when ON_TOKEN returns false.
std::vector<int64_t> generate(BakaLM& model, const std::vector<int64_t>& prompt, int64_t max_new, Sampler& sampler,
                              const std::function<bool(int64_t)>& on_token = {});

}  // namespace bakallm
