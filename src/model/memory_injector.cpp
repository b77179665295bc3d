#include "model/memory_injector.h"

namespace bakallm {

MemoryInjectorImpl::MemoryInjectorImpl(const Config& c)
    : memory_tokens(register_parameter("memory_tokens",
                                       torch::randn({2, c.num_memory_tokens, c.hidden_dim}))),
      sep_tokens(register_parameter("sep_tokens", torch::randn({2, c.hidden_dim}))),
      memory_solidifer(register_module("memory_solidifer", Block(c))),
      m_(c.num_memory_tokens) {}

torch::Tensor MemoryInjectorImpl::inject(const torch::Tensor& x, const torch::Tensor& memory) const {
  const int64_t B = x.size(0), D = x.size(2);
  auto prefix = memory.defined() ? memory : memory_tokens[0].expand({B, m_, D});  // [B, M, D]
  auto suffix = memory_tokens[1].expand({B, m_, D});                             // [B, M, D]
  auto sep0 = sep_tokens[0].expand({B, 1, D});
  auto sep1 = sep_tokens[1].expand({B, 1, D});
  return torch::cat({prefix.to(x.scalar_type()), sep0.to(x.scalar_type()), x,
                     sep1.to(x.scalar_type()), suffix.to(x.scalar_type())},
                    1);  // [B, n + 2M + 2, D]
}

torch::Tensor MemoryInjectorImpl::text_rows(const torch::Tensor& s) const {
  return s.narrow(1, m_ + 1, s.size(1) - 2 * (m_ + 1));
}

}  // namespace bakallm
