// Linear layers that read one input: a block's normed input h feeds q, k,
// fc_gate and fc_up, and m feeds v and mega_gate (model/block.h). Once their
// weights are stored for inference (BakaLMImpl::store_linear_weights), pack()
// lays them side by side, one tensor [ΣN, K] (each layer's weight a view of its
// rows), and a Scope over the input runs all their products as one product,
// of which each layer's forward then takes its own columns.
//
// Why: a decoded token's product of one row with a small weight costs ~2.4 us
// beyond its bytes (the call, its output, the prefetch's start and end), and
// from memory tiny's [320, 320] products read at 13-18 GB/s against the
// head's 21 (BENCHMARKS.md, AMD EPYC). Tiny's nine products a layer become
// five calls. The values are the separate products' (each output column is
// the same sum over the same K), up to the rounding of a tile's split.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "ops/matmul.h"

namespace bakallm {

class LinearImpl;

class SharedInput {
 public:
  // MEMBERS (at least two, each living as long as the group) read one input;
  // each is told of the group (LinearImpl::shared_input).
  static std::shared_ptr<SharedInput> make(std::vector<LinearImpl*> members);

  // Packs the members' stored weights (LinearImpl::stored_weights): one
  // tensor per stored tensor, rows in the members' order, each member's now a
  // view of its rows. False, changing nothing, where the members differ in
  // kind (float or Q8_0), dtype, input width or compute dtype, or store
  // weights in another dtype than they compute in.
  bool pack();
  // The packed tensors (none before pack()), for moving into huge pages;
  // afterwards point() makes the members' views of them again.
  std::vector<torch::Tensor*> packed_tensors();
  void point();

  // While a Scope lives, a member's forward of X (this tensor) takes its
  // columns of the packed product, made when the scope opens. Where autograd
  // records, the members' products stay apart (each output its own, in the
  // dtype its caller asks) and X's gradient from all of them is summed in
  // one buffer (ops/matmul.h's SumGradients). Without packed weights, and
  // not recording, it does nothing. X must not be changed in place while
  // the scope lives.
  class Scope {
   public:
    Scope(const std::shared_ptr<SharedInput>& group, const torch::Tensor& x);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    SharedInput* group_ = nullptr;  // set when it made the product
    const void* input_ = nullptr;   // its input's TensorImpl
    std::optional<SumGradients> gradient_;  // where autograd records
  };

  // MEMBER's product of X from the open scope's: [..., N] float32, or
  // undefined where no scope holds X.
  torch::Tensor columns(const LinearImpl& member, const torch::Tensor& x);

 private:
  explicit SharedInput(std::vector<LinearImpl*> members) : members_(std::move(members)) {}

  std::vector<LinearImpl*> members_;
  std::vector<int64_t> offsets_;       // member i's rows [offsets_[i], offsets_[i+1]) of the packed tensors
  std::vector<torch::Tensor> packed_;  // [ΣN, K] weights, or Q8_0's values [ΣN, K] and scales [ΣN, K/32]
  std::mutex mutex_;                   // one model may decode on several threads
  torch::Tensor x_, y_;                // the open scope's input, kept alive, and its product [..., ΣN] float32
};

}  // namespace bakallm
