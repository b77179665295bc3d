#include "model/linear.h"

#include <cmath>

#include "model/shared_input.h"
#include "ops/fast_tensor.h"
#include "ops/matmul.h"

namespace bakallm {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));  // = U(±1/sqrt(in))
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  }
}

bool LinearImpl::store_q8() {
  if (weight.size(1) % kQ8Block != 0) return false;
  torch::NoGradGuard no_grad;
  q8_ = quantize_q8(weight);
  weight.set_data(torch::empty({0}, weight.options()));
  return true;
}

std::vector<torch::Tensor*> LinearImpl::stored_weights() {
  if (q8_.defined()) return {&q8_.q, &q8_.scales};
  return {&weight};
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) { return forward_in(x, x.scalar_type()); }

torch::Tensor LinearImpl::forward_in(const torch::Tensor& x, torch::ScalarType dtype) {
  auto y = shared_ ? shared_->columns(*this, x) : torch::Tensor();  // [..., out] of the group's one product, if made
  if (!y.defined()) y = q8_.defined() ? matmul_nt_q8(x, q8_, compute_) : matmul_nt(x, weight, compute_, compute_weight(), dtype);
  if (y.scalar_type() != dtype) y = y.to(dtype);  // a call of libtorch's even when there's nothing to do
  if (!bias.defined()) return y;
  return add_rows(y, bias.scalar_type() == dtype ? bias : bias.to(dtype));  // in DTYPE, not promoted
}

torch::ScalarType LinearImpl::inner_dtype(const torch::Tensor& x) const {
  return q8_.defined() ? x.scalar_type() : bakallm::inner_dtype(x, product_dtype(x.scalar_type(), compute_));
}

}  // namespace bakallm
