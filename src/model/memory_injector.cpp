#include "model/memory_injector.h"

namespace bakallm {

MemoryInjectorImpl::MemoryInjectorImpl(const Config& c) : m_(c.num_memory_tokens), sep_(c.separators()) {
  memory_tokens = register_parameter("memory_tokens", torch::randn({2, c.num_memory_tokens, c.hidden_dim}));
  if (c.sep_tokens) sep_tokens = register_parameter("sep_tokens", torch::randn({2, c.hidden_dim}));
  if (c.solidifier) memory_solidifer = register_module("memory_solidifer", Block(c));
}

torch::Tensor MemoryInjectorImpl::next_memory(const torch::Tensor& s) {
  if (memory_solidifer) return memory_solidifer->solidify(s, m_);  // non-causal pass over the window
  return s.narrow(1, s.size(1) - m_, m_);                          // RMT: the suffix rows' outputs
}

// [prefix ; sep0 ; x ; sep1 ; suffix], the separators only when the config has them.
torch::Tensor MemoryInjectorImpl::rows(const std::vector<torch::Tensor>& pieces, torch::ScalarType dtype) const {
  std::vector<torch::Tensor> parts;
  for (const auto& p : pieces)
    if (p.defined()) parts.push_back(p.to(dtype));
  return torch::cat(parts, 1);
}

torch::Tensor MemoryInjectorImpl::separator(int i, int64_t B) const {
  return sep_ ? sep_tokens[i].expand({B, 1, memory_tokens.size(2)}) : torch::Tensor();
}

torch::Tensor MemoryInjectorImpl::prefix(const State& s, int64_t B) const {
  const int64_t D = memory_tokens.size(2);
  if (!s.memory.defined()) return memory_tokens[0].expand({B, m_, D});
  if (!s.fresh_rows.defined()) return s.memory;
  return torch::where(s.fresh_rows.view({-1, 1, 1}),
                      memory_tokens[0].unsqueeze(0).to(s.memory.scalar_type()), s.memory);
}

torch::Tensor MemoryInjectorImpl::head(const torch::Tensor& prefix) const {
  return rows({prefix, separator(0, prefix.size(0))}, prefix.scalar_type());
}

torch::Tensor MemoryInjectorImpl::tail(int64_t B, torch::ScalarType dtype) const {
  return rows({separator(1, B), memory_tokens[1].expand({B, m_, memory_tokens.size(2)})}, dtype);
}

torch::Tensor MemoryInjectorImpl::inject(const torch::Tensor& x, const torch::Tensor& prefix) const {
  const int64_t B = x.size(0);
  return rows({prefix, separator(0, B), x, separator(1, B), memory_tokens[1].expand({B, m_, x.size(2)})},
              x.scalar_type());
}

torch::Tensor MemoryInjectorImpl::text_rows(const torch::Tensor& s) const {
  return s.narrow(1, m_ + sep_, s.size(1) - 2 * (m_ + sep_));
}

}  // namespace bakallm
