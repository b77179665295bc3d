#include "model/shared_input.h"

#include "model/linear.h"
#include "ops/autograd.h"
#include "ops/fast_tensor.h"
#include "ops/matmul.h"
#include "ops/q8.h"

namespace bakallm {

std::shared_ptr<SharedInput> SharedInput::make(std::vector<LinearImpl*> members) {
  TORCH_CHECK(members.size() >= 2, "SharedInput: a group of ", members.size(), " layers");
  std::shared_ptr<SharedInput> group(new SharedInput(std::move(members)));
  for (auto* m : group->members_) m->set_shared_input(group);
  return group;
}

bool SharedInput::pack() {
  torch::NoGradGuard no_grad;
  const auto* first = members_[0];
  const bool q8 = first->q8().defined();
  const auto compute = first->compute_dtype();
  std::vector<std::vector<torch::Tensor*>> stored;  // [member][slot]
  for (auto* m : members_) stored.push_back(m->stored_weights());
  const auto& slots = stored[0];
  if (!q8 && slots[0]->scalar_type() != compute) return false;  // a cast each product: the members' own casts are kept
  for (size_t i = 0; i < members_.size(); ++i) {
    if (members_[i]->q8().defined() != q8 || members_[i]->compute_dtype() != compute || stored[i].size() != slots.size())
      return false;
    for (size_t s = 0; s < slots.size(); ++s) {
      const auto& t = *stored[i][s];
      if (t.dim() != 2 || t.size(1) != slots[s]->size(1) || t.scalar_type() != slots[s]->scalar_type() ||
          t.device() != slots[s]->device())
        return false;
    }
  }
  offsets_ = {0};
  for (const auto& member : stored) offsets_.push_back(offsets_.back() + member[0]->size(0));
  packed_.clear();
  for (size_t s = 0; s < slots.size(); ++s) {
    std::vector<torch::Tensor> parts;
    for (const auto& member : stored) parts.push_back(*member[s]);
    packed_.push_back(torch::cat(parts));  // [ΣN, K] (or [ΣN, K/32])
  }
  point();
  return true;
}

std::vector<torch::Tensor*> SharedInput::packed_tensors() {
  std::vector<torch::Tensor*> out;
  for (auto& t : packed_) out.push_back(&t);
  return out;
}

void SharedInput::point() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < members_.size(); ++i) {
    const auto stored = members_[i]->stored_weights();
    for (size_t s = 0; s < packed_.size(); ++s)
      stored[s]->set_data(packed_[s].narrow(0, offsets_[i], offsets_[i + 1] - offsets_[i]));  // its rows, in place
  }
}

SharedInput::Scope::Scope(const std::shared_ptr<SharedInput>& group, const torch::Tensor& x) {
  if (!group || !x.defined()) return;
  if (wants_grad(x)) gradient_.emplace(x);
  if (group->packed_.empty() || wants_grad(x, group->members_[0]->weight)) return;
  auto& g = *group;
  const auto* first = g.members_[0];
  const auto compute = first->compute_dtype();
  auto y = first->q8().defined() ? matmul_nt_q8(x, Q8Weight{g.packed_[0], g.packed_[1]}, compute)
                                 : matmul_nt(x, g.packed_[0], compute, {}, torch::kFloat);  // [..., ΣN]
  std::lock_guard<std::mutex> lock(g.mutex_);
  g.x_ = x;
  g.y_ = y.scalar_type() == torch::kFloat ? y : y.to(torch::kFloat);
  group_ = &g;
  input_ = x.unsafeGetTensorImpl();
}

SharedInput::Scope::~Scope() {
  if (!group_) return;
  std::lock_guard<std::mutex> lock(group_->mutex_);
  if (group_->x_.unsafeGetTensorImpl() != input_) return;  // another thread's scope replaced it: that one's now
  group_->x_ = torch::Tensor();
  group_->y_ = torch::Tensor();
}

torch::Tensor SharedInput::columns(const LinearImpl& member, const torch::Tensor& x) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!x_.defined() || x_.unsafeGetTensorImpl() != x.unsafeGetTensorImpl()) return {};
  for (size_t i = 0; i < members_.size(); ++i)
    if (members_[i] == &member) {
      const auto c = narrow_rows(y_, -1, offsets_[i], offsets_[i + 1] - offsets_[i]);  // [..., N]
      return c.is_contiguous() ? c : c.contiguous();                               // one row: a view
    }
  return {};
}

}  // namespace bakallm
