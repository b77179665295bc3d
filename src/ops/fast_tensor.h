// New tensors and views for the per-token path without a trip through
// libtorch's dispatcher. A decoded token of tiny ran ~300 libtorch calls, most
// of them a kernel's output (empty, empty_like) or a view of a row buffer or
// of a grouped product (narrow); each costs 0.5-1.1 us through the dispatcher
// against 0.1 us for a view made in place (bench/bench_model.cpp,
// BM_TensorCalls). Off the CPU, or where autograd may see the tensor, these
// are the plain libtorch calls.
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

}  // namespace bakallm
