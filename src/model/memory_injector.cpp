#include "model/memory_injector.h"

namespace bakallm {

MemoryInjectorImpl::MemoryInjectorImpl(const Config& c)
    : memory_tokens(register_parameter("memory_tokens",
                                       torch::randn({2, c.num_memory_tokens, c.hidden_dim}))),
      sep_tokens(register_parameter("sep_tokens", torch::randn({2, c.hidden_dim}))),
      memory_solidifer(register_module("memory_solidifer", Block(c))),
      m_(c.num_memory_tokens) {}

torch::Tensor MemoryInjectorImpl::prefix(const State& s, int64_t B) const {
  const int64_t D = memory_tokens.size(2);
  if (!s.memory.defined()) return memory_tokens[0].expand({B, m_, D});
  if (!s.fresh_rows.defined()) return s.memory;
  return torch::where(s.fresh_rows.view({-1, 1, 1}),
                      memory_tokens[0].unsqueeze(0).to(s.memory.scalar_type()), s.memory);
}

torch::Tensor MemoryInjectorImpl::head(const torch::Tensor& prefix) const {
  const int64_t B = prefix.size(0), D = prefix.size(2);
  return torch::cat({prefix, sep_tokens[0].expand({B, 1, D}).to(prefix.scalar_type())}, 1);
}

torch::Tensor MemoryInjectorImpl::tail(int64_t B, torch::ScalarType dtype) const {
  const int64_t D = memory_tokens.size(2);
  return torch::cat({sep_tokens[1].expand({B, 1, D}), memory_tokens[1].expand({B, m_, D})}, 1).to(dtype);
}

torch::Tensor MemoryInjectorImpl::inject(const torch::Tensor& x, const torch::Tensor& prefix) const {
  const int64_t B = x.size(0), D = x.size(2);
  const auto dtype = x.scalar_type();
  auto sep0 = sep_tokens[0].expand({B, 1, D});
  auto sep1 = sep_tokens[1].expand({B, 1, D});
  auto suffix = memory_tokens[1].expand({B, m_, D});
  return torch::cat({prefix.to(dtype), sep0.to(dtype), x, sep1.to(dtype), suffix.to(dtype)}, 1);
}

torch::Tensor MemoryInjectorImpl::text_rows(const torch::Tensor& s) const {
  return s.narrow(1, m_ + 1, s.size(1) - 2 * (m_ + 1));
}

}  // namespace bakallm
