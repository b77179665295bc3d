#include "util/huge_pages.h"

#include <sys/mman.h>

#include <fstream>
#include <memory>
#include <string>

namespace bakallm {

namespace {

// BYTES of anonymous memory, 2 MB-aligned, advised for huge pages; unmapped
// when the last tensor on it goes.
class Region {
 public:
  explicit Region(int64_t bytes) {
    length_ = static_cast<size_t>((bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes + kHugePageBytes);
    base_ = ::mmap(nullptr, length_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(base_ != MAP_FAILED, "huge pages: mmap of ", length_, " bytes failed");
    const auto address = reinterpret_cast<uintptr_t>(base_);
    data_ = reinterpret_cast<char*>((address + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes);
    ::madvise(data_, length_ - (data_ - static_cast<char*>(base_)), MADV_HUGEPAGE);  // a hint: failure is harmless
  }
  ~Region() { ::munmap(base_, length_); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  char* data() const { return data_; }

 private:
  void* base_ = nullptr;
  size_t length_ = 0;
  char* data_ = nullptr;
};

int64_t aligned(int64_t bytes) { return (bytes + 63) / 64 * 64; }  // each tensor on a cache line

torch::Tensor on(const std::shared_ptr<Region>& region, int64_t offset, at::IntArrayRef sizes,
                 const torch::TensorOptions& options) {
  return torch::from_blob(region->data() + offset, sizes, [region](void*) {}, options);
}

}  // namespace

torch::Tensor empty_huge(at::IntArrayRef sizes, const torch::TensorOptions& options) {
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(options.dtype().itemsize());
  if (!options.device().is_cpu() || bytes < kHugePageBytes) return torch::empty(sizes, options);
  return on(std::make_shared<Region>(bytes), 0, sizes, options);
}

void move_to_huge_pages(const std::vector<torch::Tensor*>& tensors) {
  std::vector<torch::Tensor*> cpu;
  int64_t total = 0;
  for (auto* t : tensors)
    if (t->defined() && t->device().is_cpu()) {
      cpu.push_back(t);
      total += aligned(static_cast<int64_t>(t->nbytes()));
    }
  if (total == 0) return;
  torch::NoGradGuard no_grad;
  const auto region = std::make_shared<Region>(total);
  int64_t offset = 0;
  for (auto* t : cpu) {
    auto moved = on(region, offset, t->sizes(), t->options().requires_grad(false));
    moved.copy_(*t);
    t->set_data(moved);
    offset += aligned(static_cast<int64_t>(moved.nbytes()));
  }
}

int64_t huge_page_bytes() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string key;
  int64_t kb = 0;
  while (in >> key) {
    if (key == "AnonHugePages:" && in >> kb) return kb * 1024;
    in.ignore(1 << 12, '\n');
  }
  return 0;
}

}  // namespace bakallm
