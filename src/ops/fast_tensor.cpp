#include "ops/fast_tensor.h"

#include <ATen/EmptyTensor.h>

#include <c10/util/SmallVector.h>

#include "ops/autograd.h"

namespace bakallm {

torch::Tensor empty_rows(c10::IntArrayRef sizes, torch::ScalarType dtype, const torch::Device& device) {
  if (!device.is_cpu()) return torch::empty(sizes, torch::TensorOptions().dtype(dtype).device(device));
  return at::detail::empty_cpu(sizes, dtype, /*pin_memory=*/false, c10::nullopt);
}

torch::Tensor empty_as(const torch::Tensor& x) { return empty_rows(x.sizes(), x.scalar_type(), x.device()); }

namespace {

// Whether a view of T may be made in place: an inference tensor under
// c10::InferenceMode (no version counter or autograd view to keep).
bool viewable_in_place(const torch::Tensor& t) {
  return c10::InferenceMode::is_enabled() && t.is_inference() && t.device().is_cpu() && t.layout() == torch::kStrided &&
         t.has_storage();
}

// A view of T's storage with SIZES and STRIDES from OFFSET.
torch::Tensor view_of(const torch::Tensor& t, c10::IntArrayRef sizes, c10::IntArrayRef strides, int64_t offset) {
  auto v = at::detail::make_tensor<c10::TensorImpl>(c10::TensorImpl::VIEW, c10::Storage(t.storage()), t.key_set(),
                                                    t.dtype());
  auto* impl = v.unsafeGetTensorImpl();
  impl->set_sizes_and_strides(sizes, strides);
  impl->set_storage_offset(offset);
  return v;
}

}  // namespace

torch::Tensor narrow_rows(const torch::Tensor& t, int64_t dim, int64_t start, int64_t length) {
  const int64_t rank = t.dim();
  if (dim < 0) dim += rank;
  if (!viewable_in_place(t) || dim < 0 || dim >= rank || start < 0 || length < 0 || start + length > t.size(dim))
    return t.narrow(dim, start, length);  // libtorch's own checks and errors
  c10::SmallVector<int64_t, 5> sizes(t.sizes().begin(), t.sizes().end());
  sizes[static_cast<size_t>(dim)] = length;
  return view_of(t, sizes, t.strides(), t.storage_offset() + start * t.stride(dim));
}

torch::Tensor select_rows(const torch::Tensor& t, int64_t dim, int64_t index) {
  const int64_t rank = t.dim();
  if (dim < 0) dim += rank;
  if (!viewable_in_place(t) || dim < 0 || dim >= rank || index < 0 || index >= t.size(dim))
    return t.select(dim, index);
  c10::SmallVector<int64_t, 5> sizes, strides;
  for (int64_t d = 0; d < rank; ++d)
    if (d != dim) {
      sizes.push_back(t.size(d));
      strides.push_back(t.stride(d));
    }
  return view_of(t, sizes, strides, t.storage_offset() + index * t.stride(dim));
}

torch::Tensor add_rows(const torch::Tensor& x, const torch::Tensor& y) {
  auto plain = [](const torch::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.layout() == torch::kStrided &&
           t.is_contiguous() && !wants_grad(t);
  };
  const int64_t n = x.numel();
  const bool bias = y.dim() == 1 && x.dim() >= 1 && y.size(0) == x.size(-1) && y.size(0) > 0;
  if (!plain(x) || !plain(y) || n > kAddRowsValues || !(bias || y.sizes() == x.sizes())) return x + y;
  auto out = empty_as(x);
  const float *px = x.data_ptr<float>(), *py = y.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const int64_t width = bias ? y.size(0) : n;  // y's values repeat every WIDTH
  for (int64_t r = 0; r < n; r += width)
    for (int64_t i = 0; i < width; ++i) po[r + i] = px[r + i] + py[i];
  return out;
}

bool slices_apart(const torch::Tensor& t) {
  if (t.dim() < 2 || t.is_contiguous() || t.size(0) < 2) return false;
  int64_t expected = 1;  // the slice's own strides, innermost first
  for (int64_t d = t.dim() - 1; d >= 1; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) return false;
    expected *= t.size(d);
  }
  return t.stride(0) > expected;
}

}  // namespace bakallm
