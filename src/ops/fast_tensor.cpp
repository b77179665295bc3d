#include "ops/fast_tensor.h"

#include <ATen/EmptyTensor.h>

#include <c10/util/SmallVector.h>

namespace bakallm {

torch::Tensor empty_rows(c10::IntArrayRef sizes, torch::ScalarType dtype, const torch::Device& device) {
  if (!device.is_cpu()) return torch::empty(sizes, torch::TensorOptions().dtype(dtype).device(device));
  return at::detail::empty_cpu(sizes, dtype, /*pin_memory=*/false, c10::nullopt);
}

torch::Tensor empty_as(const torch::Tensor& x) { return empty_rows(x.sizes(), x.scalar_type(), x.device()); }

torch::Tensor narrow_rows(const torch::Tensor& t, int64_t dim, int64_t start, int64_t length) {
  const int64_t rank = t.dim();
  if (dim < 0) dim += rank;
  if (!c10::InferenceMode::is_enabled() || !t.is_inference() || !t.device().is_cpu() ||
      t.layout() != torch::kStrided || !t.has_storage() || dim < 0 || dim >= rank || start < 0 || length < 0 ||
      start + length > t.size(dim))
    return t.narrow(dim, start, length);  // libtorch's own checks and errors
  auto v = at::detail::make_tensor<c10::TensorImpl>(c10::TensorImpl::VIEW, c10::Storage(t.storage()), t.key_set(),
                                                    t.dtype());
  c10::SmallVector<int64_t, 5> sizes(t.sizes().begin(), t.sizes().end());
  sizes[static_cast<size_t>(dim)] = length;
  auto* impl = v.unsafeGetTensorImpl();
  impl->set_sizes_and_strides(sizes, t.strides());
  impl->set_storage_offset(t.storage_offset() + start * t.stride(dim));
  return v;
}

}  // namespace bakallm
