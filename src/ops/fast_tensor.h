// New tensors, views and sums for the per-token path without a trip through
// libtorch's dispatcher. A decoded token of tiny ran ~300 libtorch calls, most
// of them a kernel's output (empty, empty_like) or a view of a row buffer or
// of a grouped product (narrow); each costs 0.5-1.1 us through the dispatcher
// against 0.1 us for a view made in place (bench/bench_model.cpp,
// BM_TensorCalls). Within a token each such call runs cold: the product
// before it streamed megabytes of weights through the caches, its code's
// too, and an add of one row took 5-7 us there (AMD EPYC, session 19). Off
// the CPU, or where autograd may see the tensor, these are the plain libtorch
// calls.
#pragma once
#include <torch/torch.h>

namespace bakallm {

// An uninitialised contiguous tensor of SIZES, DTYPE on DEVICE: at::empty.
torch::Tensor empty_rows(c10::IntArrayRef sizes, torch::ScalarType dtype, const torch::Device& device);

// An uninitialised contiguous tensor with X's sizes, dtype and device.
torch::Tensor empty_as(const torch::Tensor& x);

// T.narrow(dim, start, length): made in place for an inference tensor on the
// CPU under c10::InferenceMode (no version counter or autograd view to keep).
torch::Tensor narrow_rows(const torch::Tensor& t, int64_t dim, int64_t start, int64_t length);

// T.select(dim, index), made in place as narrow_rows makes its views.
torch::Tensor select_rows(const torch::Tensor& t, int64_t dim, int64_t index);

// Whether T [G, ...] is G contiguous slices with gaps between them (stride(0)
// beyond a slice's size): a narrow along dim 1 of a contiguous tensor, as the
// gradient of one part of a cat along time (the attention's keys and values
// of the past and of the window). A kernel that reads it slice by slice
// takes it without the contiguous() copy.
bool slices_apart(const torch::Tensor& t);

// The most values add_rows sums in its own loop: a few decoded rows.
constexpr int64_t kAddRowsValues = int64_t{1} << 16;

// X + Y for Y of X's sizes or of X's last one alone (a bias, [N]): float32
// CPU tensors of at most kAddRowsValues values that autograd won't see, in
// one loop into empty_as(X); x + y otherwise (libtorch's broadcasting,
// promotion and errors). The same sums either way.
torch::Tensor add_rows(const torch::Tensor& x, const torch::Tensor& y);

}  // namespace bakallm
