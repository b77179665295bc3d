// Small model configs for tests: D, L, M, I, W, V; no dropout.
#pragma once
#include "model/config.h"

namespace bakallm::test {

inline Config small_config(int64_t D, int64_t L, int64_t M, int64_t I, int64_t W, int64_t V) {
  Config c;
  c.hidden_dim = D;
  c.num_layers = L;
  c.num_memory_tokens = M;
  c.intermediate_dim = I;
  c.window_size = W;
  c.vocab_size = V;
  c.attn_dropout = 0.0;
  return c;
}

}  // namespace bakallm::test
