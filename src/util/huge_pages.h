// CPU tensors in memory the kernel may back with 2 MB pages (transparent huge
// pages, asked for with madvise before the memory is first touched).
//
// Why: a decoded token streams every weight and the keys and values once.
// With 4 kB pages each page is a TLB miss and the hardware prefetcher stops at
// every page's end: on the 2-core Xeon with AMX the row kernel read a 512 MB
// weight at 24 GB/s from 4 kB pages and at 30-31 GB/s from 2 MB pages.
// Where the kernel gives no huge pages (THP "never") the memory is ordinary.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace bakallm {

constexpr int64_t kHugePageBytes = int64_t{2} << 20;

// An uninitialised tensor of SIZES in memory advised for huge pages, when on
// the CPU and at least one huge page large; torch::empty otherwise.
torch::Tensor empty_huge(at::IntArrayRef sizes, const torch::TensorOptions& options);

// Each CPU tensor's values moved into one region advised for huge pages
// (set_data: a parameter stays the same parameter, with new storage). The
// region lives while any of them does. Other devices' tensors stay as they are.
void move_to_huge_pages(const std::vector<torch::Tensor*>& tensors);

// Bytes of this process's memory in huge pages now (AnonHugePages of
// /proc/self/smaps_rollup; 0 where it cannot be read).
int64_t huge_page_bytes();

}  // namespace bakallm
