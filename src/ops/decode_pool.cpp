#include "ops/decode_pool.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <immintrin.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "ops/simd.h"

namespace bakallm {

namespace {

// At most this much of the next weight is streamed ahead (measured on the
// AMD EPYC, tiny bfloat16: 384 kB 4%, 1 and 2 MB 5-8% a token).
constexpr int64_t kStreamBytes = int64_t{1} << 20;
// How long the worker spins for a next call before it sleeps: a tiny token's
// serial gaps between products are ~15 us; a pause is 27 ns on the AMD EPYC,
// ~70 on Intel cores since Skylake, hence a clock, not a count.
constexpr auto kSpin = std::chrono::microseconds(200);
// The least of a weight a thread takes at a time in parallel_rows' halves:
// its claims of work cost an atomic add each, ~10 ns, and 16 kB ~1.3 us.
constexpr int64_t kChunkBytes = int64_t{16} << 10;
// stream_ahead's pace: a line each 5 ns, 12.8 GB/s, what one core of the AMD
// EPYC reads by loads; issued faster, its prefetches are dropped. Asked in
// batches of 8 lines, between which it waits for the time-stamp counter.
constexpr double kStreamNsPerLine = 5;
constexpr int64_t kStreamBatch = 512;

// Time-stamp counter ticks per nanosecond, measured once over 100 us.
double tsc_per_ns() {
  static const double ratio = [] {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t c0 = __rdtsc();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(100)) _mm_pause();
    const uint64_t c1 = __rdtsc();
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    return static_cast<double>(c1 - c0) / ns;
  }();
  return ratio;
}

class DecodePool {
 public:
  DecodePool() { std::thread([this] { work(); }).detach(); }

  bool run(c10::function_ref<void(int)> f, const StreamShare& share) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    StreamShare next;  // what followed this weight last time
    if (share.key) {
      if (successor_.size() >= kDecodeSuccessors) successor_.clear();  // weights of models since unloaded, mostly
      if (last_key_) successor_[last_key_] = share;
      last_key_ = share.key;
      if (const auto it = successor_.find(share.key); it != successor_.end()) next = it->second;
    }
    task_ = &f;
    stream_ = next;
    error_ = nullptr;
    const uint64_t call_number = posted_.load(std::memory_order_relaxed) + 1;
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      posted_.store(call_number, std::memory_order_release);
    }
    wake_.notify_one();
    std::exception_ptr mine;
    try {
      f(0);
    } catch (...) {
      mine = std::current_exception();
    }
    while (done_.load(std::memory_order_acquire) != call_number) _mm_pause();
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
    return true;
  }

  size_t remembered() {
    std::lock_guard<std::mutex> call(call_mutex_);
    return successor_.size();
  }

 private:
  void work() {
    uint64_t seen = 0;
    for (;;) {
      auto since = std::chrono::steady_clock::now();
      for (int spins = 1; posted_.load(std::memory_order_acquire) == seen; ++spins) {
        _mm_pause();
        if (spins % 64 == 0 && std::chrono::steady_clock::now() - since > kSpin) {
          std::unique_lock<std::mutex> lock(sleep_mutex_);
          wake_.wait(lock, [&] { return posted_.load(std::memory_order_acquire) != seen; });
          since = std::chrono::steady_clock::now();
        }
      }
      seen = posted_.load(std::memory_order_acquire);
      try {
        (*task_)(1);
      } catch (...) {
        error_ = std::current_exception();
      }
      const StreamShare next = stream_;
      done_.store(seen, std::memory_order_release);
      // Prefetches, not loads: the weight may have been freed since it was seen.
      stream_ahead(next.first, std::min(next.bytes, kStreamBytes),
                   [&] { return posted_.load(std::memory_order_relaxed) == seen; });
    }
  }

  std::mutex call_mutex_;  // one call at a time; a second caller uses at::parallel_for
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> posted_{0}, done_{0};
  const c10::function_ref<void(int)>* task_ = nullptr;
  StreamShare stream_;
  std::exception_ptr error_;
  const void* last_key_ = nullptr;
  std::unordered_map<const void*, StreamShare> successor_;
};

DecodePool& decode_pool() {
  static DecodePool* pool = new DecodePool;  // never destroyed: its worker outlives main's statics
  return *pool;
}

}  // namespace

void stream_ahead(const char* first, int64_t bytes, c10::function_ref<bool()> keep_going) {
  const auto ticks = static_cast<uint64_t>(kStreamNsPerLine * (kStreamBatch / 64) * tsc_per_ns());
  uint64_t due = __rdtsc();
  for (int64_t at = 0; at < bytes && keep_going(); at += kStreamBatch) {
    for (int64_t line = at; line < std::min(bytes, at + kStreamBatch); line += 64) prefetch_line(first + line);
    due += ticks;
    uint64_t now;
    while ((now = __rdtsc()) < due) _mm_pause();
    if (now > due + ticks) due = now;  // fallen behind (the thread was descheduled): no burst to catch up
  }
}

bool decode_pair(c10::function_ref<void(int)> f, const StreamShare& share) {
  if (!c10::InferenceMode::is_enabled() || at::get_num_threads() != 2 || at::in_parallel_region()) return false;
  return decode_pool().run(f, share);
}

size_t decode_pool_successors() { return decode_pool().remembered(); }

namespace {

// One thread's half of parallel_rows' units of work, [lo, hi) relative to the
// half's start, packed in one word: its owner takes chunks from the bottom,
// the other thread, once done with its own half, from the top. Whichever
// changes the word second finds what the first took: the owner alone moves
// lo, the thief alone hi.
class Half {
 public:
  explicit Half(int64_t size) : lo_(0), seen_hi_(size), hi_(size), packed_(static_cast<uint64_t>(size) << 32) {}

  // The owner's next chunk: half of what it last saw left, at least LEAST (> 0).
  bool own(int64_t least, int64_t& first, int64_t& last) {
    const int64_t want = std::max(least, (seen_hi_ - lo_) / 2);
    const uint64_t old = packed_.fetch_add(static_cast<uint64_t>(want), std::memory_order_acq_rel);
    first = lo_;
    seen_hi_ = static_cast<int64_t>(old >> 32);
    lo_ += want;
    last = std::min(lo_, seen_hi_);
    return first < last;
  }

  // The thief's next chunk, from the top: half of what is left, at least LEAST.
  bool steal(int64_t least, int64_t& first, int64_t& last) {
    const int64_t lo = static_cast<int64_t>(packed_.load(std::memory_order_acquire) & 0xffffffffu);
    if (lo >= hi_) return false;
    const int64_t start = std::max(lo, hi_ - std::max(least, (hi_ - lo) / 2));  // not below lo as seen: hi never wraps
    const uint64_t old = packed_.fetch_sub(static_cast<uint64_t>(hi_ - start) << 32, std::memory_order_acq_rel);
    first = std::max(start, static_cast<int64_t>(old & 0xffffffffu));
    last = hi_;
    hi_ = start;
    return first < last;
  }

 private:
  int64_t lo_, seen_hi_;  // the owner's
  int64_t hi_;            // the thief's
  alignas(64) std::atomic<uint64_t> packed_;
};

}  // namespace

void parallel_rows(int64_t rows, int64_t begin, int64_t end, int64_t grain, c10::function_ref<void(int64_t, int64_t)> f,
                   const StreamedRows& weight) {
  if (rows <= kDecodeRows && end - begin > grain) {
    // Whole units of work from BEGIN (the last may be short): the worker's half of them from MID.
    const int64_t unit = std::max<int64_t>(1, weight.unit), units = (end - begin + unit - 1) / unit;
    const int64_t mid_units = (units + 1) / 2, mid = std::min(end, begin + mid_units * unit);
    const int64_t least = weight.data ? std::max<int64_t>(1, kChunkBytes / (weight.row_bytes * unit)) : 1;
    StreamShare share;
    if (weight.data)
      share = {weight.data, static_cast<const char*>(weight.data) + mid * weight.row_bytes, (end - mid) * weight.row_bytes};
    Half halves[2] = {Half(mid_units), Half(units - mid_units)};
    const int64_t base[2] = {0, mid_units};
    const auto run = [&](int t, int64_t first, int64_t last) {
      f(begin + (base[t] + first) * unit, std::min(end, begin + (base[t] + last) * unit));
    };
    if (decode_pair(
            [&](int t) {
              int64_t first, last;
              while (halves[t].own(least, first, last)) run(t, first, last);
              while (halves[1 - t].steal(least, first, last)) run(1 - t, first, last);
            },
            share))
      return;
  }
  at::parallel_for(begin, end, grain, f);
}

}  // namespace bakallm
