// RMT-style memory (`model.memory_injector.`): the layout of an extended window
//   [prefix(M) ; sep0 ; tokens ; sep1 ; suffix(M)]   (no sep rows when sep_tokens is off)
// where prefix is memory_tokens[0] for a stream's first window and the
// solidified memory of the previous window after that, suffix is always
// memory_tokens[1]; the solidifier turns the last layer's output into the
// next memory. The batched forward reads inject(x) in one piece; the decoder
// reads head(), then the tokens as they come, then tail().
#pragma once
#include <torch/torch.h>

#include "model/block.h"
#include "model/config.h"
#include "model/state.h"

namespace bakallm {

class MemoryInjectorImpl : public torch::nn::Module {
 public:
  explicit MemoryInjectorImpl(const Config& config);

  // The prefix memory of the next window of STATE for B rows: the memory
  // handed on, or memory_tokens[0] for a fresh stream and restarted rows.  -> [B, M, D]
  torch::Tensor prefix(const State& state, int64_t batch) const;

  // [prefix ; sep0]: the rows before the tokens.                   -> [B, M + 1, D]
  torch::Tensor head(const torch::Tensor& prefix) const;
  // [sep1 ; suffix]: the rows after the tokens.                     -> [B, M + 1, D]
  torch::Tensor tail(int64_t batch, torch::ScalarType dtype) const;
  // [head ; x ; tail] for tokens x [B, n, D].                      -> [B, n + 2M + 2, D]
  torch::Tensor inject(const torch::Tensor& x, const torch::Tensor& prefix) const;

  // The text rows of an extended window s: s[:, M+1 : M+1+n].       -> [B, n, D]
  torch::Tensor text_rows(const torch::Tensor& s) const;

  // The next window's memory from the last layer's output s: the solidifier's
  // pass, or without it (config `solidifier`) the suffix rows of s.  -> [B, M, D]
  torch::Tensor next_memory(const torch::Tensor& s);

  torch::Tensor memory_tokens;  // [2, M, D]
  torch::Tensor sep_tokens;     // [2, D]; undefined without sep_tokens
  Block memory_solidifer{nullptr};  // spelled as in the prototype's checkpoints; absent without `solidifier`

 private:
  torch::Tensor rows(const std::vector<torch::Tensor>& pieces, torch::ScalarType dtype) const;
  torch::Tensor separator(int i, int64_t batch) const;  // [B, 1, D] or undefined
  int64_t m_;
  int64_t sep_;  // separator rows on each side: 1, or 0 without sep_tokens
};
TORCH_MODULE(MemoryInjector);

}  // namespace bakallm
