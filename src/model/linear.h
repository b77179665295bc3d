// A Linear layer (`weight` [out, in], optional `bias` [out]) whose product
// runs through matmul_nt, so the kernel and compute dtype are chosen in one
// place. Initialised as torch.nn.Linear: U(±1/sqrt(in)) for both.
#pragma once
#include <torch/torch.h>

#include "ops/cast_cache.h"
#include "ops/matmul.h"
#include "ops/q8.h"

namespace bakallm {

class SharedInput;  // model/shared_input.h

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias = false);

  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out], x's dtype
  // The same with the output in DTYPE (inner_dtype: an activation that only
  // another product reads, ops/matmul.h).
  torch::Tensor forward_in(const torch::Tensor& x, torch::ScalarType dtype);
  // The dtype for this layer's output of x when only other products (through
  // elementwise ops) or a gate read it, and that output.
  torch::ScalarType inner_dtype(const torch::Tensor& x) const;
  torch::Tensor inner(const torch::Tensor& x) { return forward_in(x, inner_dtype(x)); }
  void set_compute_dtype(torch::ScalarType dtype) { compute_ = dtype; }
  torch::ScalarType compute_dtype() const { return compute_; }
  // The weight in the compute dtype: itself, or its copy kept until the
  // weight changes (ops/cast_cache.h).
  torch::Tensor compute_weight() { return cast_.get(weight, product_dtype(weight.scalar_type(), compute_)); }
  // Inference in 8 bits (ops/q8.h): the weight becomes Q8_0 and its float
  // values are gone (weight is left empty). Returns false, changing nothing,
  // when `in` is not a multiple of 32.
  bool store_q8();
  const Q8Weight& q8() const { return q8_; }
  // The tensors the products read: the weight, or the Q8_0 values and scales.
  std::vector<torch::Tensor*> stored_weights();
  // The layers reading the same input as this one, whose products of it may
  // run as one (model/shared_input.h); null when none.
  const std::shared_ptr<SharedInput>& shared_input() const { return shared_; }
  void set_shared_input(std::shared_ptr<SharedInput> group) { shared_ = std::move(group); }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined

 private:
  torch::ScalarType compute_ = torch::kFloat;
  Q8Weight q8_;  // set by store_q8()
  CastCache cast_;
  std::shared_ptr<SharedInput> shared_;
};
TORCH_MODULE(Linear);

}  // namespace bakallm
