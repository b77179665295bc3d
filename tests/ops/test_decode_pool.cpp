// The decode pool (ops/decode_pool.h): under inference with two threads it
// runs one half here and one on its worker, covers every index once,
// passes errors back, and steps aside (running nothing) wherever it can't
// take a call; its streaming ahead never faults, even on freed memory.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <torch/torch.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "ops/decode_pool.h"

namespace bakallm {
namespace {

struct TwoThreads {
  int before = at::get_num_threads();
  TwoThreads() { at::set_num_threads(2); }
  ~TwoThreads() { at::set_num_threads(before); }
};

// BYTES of address space mapped and unmapped again: reading it would fault.
const char* unmapped(size_t bytes) {
  void* gone = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_NE(gone, MAP_FAILED);
  EXPECT_EQ(munmap(gone, bytes), 0);
  return static_cast<const char*>(gone);
}

TEST(DecodePool, RunsOneHalfHereAndOneOnItsWorker) {
  TwoThreads threads;
  c10::InferenceMode inference;
  std::thread::id ran[2];
  ASSERT_TRUE(decode_pair([&](int t) { ran[t] = std::this_thread::get_id(); }));
  EXPECT_EQ(ran[0], std::this_thread::get_id());
  EXPECT_NE(ran[1], std::thread::id());
  EXPECT_NE(ran[1], ran[0]);
}

TEST(DecodePool, StepsAsideOutsideInferenceOrWithinACall) {
  TwoThreads threads;
  int calls = 0;
  EXPECT_FALSE(decode_pair([&](int) { ++calls; }));  // not inference
  EXPECT_EQ(calls, 0);
  c10::InferenceMode inference;
  bool nested = true;
  ASSERT_TRUE(decode_pair([&](int t) {
    if (t == 0) nested = decode_pair([&](int) { ++calls; });  // the pool is busy: this caller's call
  }));
  EXPECT_FALSE(nested);
  EXPECT_EQ(calls, 0);
  at::set_num_threads(1);
  EXPECT_FALSE(decode_pair([&](int) { ++calls; }));
  EXPECT_EQ(calls, 0);
}

TEST(DecodePool, RowsCoverEveryIndexOnce) {
  TwoThreads threads;
  for (bool inference : {false, true}) {
    c10::optional<c10::InferenceMode> mode;
    if (inference) mode.emplace();
    for (int64_t n : {1, 2, 7, 64, 1001}) {
      std::vector<std::atomic<int>> seen(n);
      parallel_rows(1, 0, n, 3, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) seen[i]++;
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i].load(), 1) << "n " << n << " index " << i;
    }
  }
}

// Each thread takes its half in chunks on whole units (a row product's tiles)
// and, done, takes chunks of the other's: a slow thread's half is finished by
// the other. With no weight, and with one (3000-byte rows, the worker's share
// streamed ahead: the least chunk, 16 kB, is then one unit of 12 kB).
TEST(DecodePool, ChunksStartOnUnitsAndTheFasterThreadHelpsTheSlower) {
  TwoThreads threads;
  c10::InferenceMode inference;
  const std::thread::id caller = std::this_thread::get_id();
  const int64_t begin = 3, end = 3 + 4 * 50 + 3, unit = 4;  // 50 whole units and a part
  const int64_t mid = begin + 4 * 26;                      // the worker's half from here: half rounded up to units
  std::vector<char> weight(end * 3000);
  for (const StreamedRows& rows : {StreamedRows{nullptr, 0, unit}, StreamedRows{weight.data(), 3000, unit}}) {
    for (bool slow_worker : {true, false}) {
      std::vector<std::atomic<int>> seen(end);
      std::mutex mutex;
      std::vector<std::pair<int64_t, int64_t>> chunks;
      std::atomic<int64_t> caller_above{0}, worker_below{0};  // indices of the other thread's half
      parallel_rows(
          1, begin, end, 1,
          [&](int64_t b, int64_t e) {
            const bool on_caller = std::this_thread::get_id() == caller;
            if (on_caller != slow_worker) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            for (int64_t i = b; i < e; ++i) {
              seen[i]++;
              if (on_caller && i >= mid) caller_above++;
              if (!on_caller && i < mid) worker_below++;
            }
            std::lock_guard<std::mutex> lock(mutex);
            chunks.emplace_back(b, e);
          },
          rows);
      for (int64_t i = begin; i < end; ++i) EXPECT_EQ(seen[i].load(), 1) << "index " << i;
      for (const auto& [b, e] : chunks) {
        EXPECT_EQ((b - begin) % unit, 0) << b;
        EXPECT_TRUE((e - begin) % unit == 0 || e == end) << e;
      }
      EXPECT_GT(slow_worker ? caller_above.load() : worker_below.load(), 0);
    }
  }
}

TEST(DecodePool, LeavesManyRowsToLibgomp) {
  TwoThreads threads;
  c10::InferenceMode inference;
  std::thread::id worker;
  ASSERT_TRUE(decode_pair([&](int t) {
    if (t == 1) worker = std::this_thread::get_id();
  }));
  std::vector<std::thread::id> ran;
  std::mutex mutex;
  const auto note = [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    ran.push_back(std::this_thread::get_id());
  };
  parallel_rows(kDecodeRows + 1, 0, 64, 1, note);  // at::parallel_for
  for (const auto& id : ran) EXPECT_NE(id, worker);
  ran.clear();
  parallel_rows(kDecodeRows, 0, 64, 1, note);  // the pool: this thread and its worker (which may find nothing left)
  ASSERT_FALSE(ran.empty());
  for (const auto& id : ran) EXPECT_TRUE(id == worker || id == std::this_thread::get_id());
}

TEST(DecodePool, PassesTheWorkersErrorBackAndKeepsWorking) {
  TwoThreads threads;
  c10::InferenceMode inference;
  EXPECT_THROW(decode_pair([](int t) {
                 if (t == 1) throw std::runtime_error("worker");
               }),
               std::runtime_error);
  EXPECT_THROW(decode_pair([](int t) {
                 if (t == 0) throw std::runtime_error("caller");
               }),
               std::runtime_error);
  std::atomic<int> parts{0};
  EXPECT_TRUE(decode_pair([&](int t) { parts += t + 1; }));
  EXPECT_EQ(parts.load(), 3);
}

TEST(DecodePool, RemembersABoundedNumberOfWeights) {
  TwoThreads threads;
  c10::InferenceMode inference;
  std::vector<char> weights(kDecodeSuccessors + 1000);  // more weights' keys than it keeps: models loaded one after another
  for (size_t i = 0; i < weights.size(); ++i) {
    ASSERT_TRUE(decode_pair([](int) {}, StreamShare{&weights[i], &weights[i], 1}));
    ASSERT_LE(decode_pool_successors(), kDecodeSuccessors);
  }
  EXPECT_GT(decode_pool_successors(), 0u);
}

TEST(DecodePool, StreamAheadStopsWhenToldAndNeverFaults) {
  const size_t bytes = 1 << 20;
  const char* gone = unmapped(bytes);
  int asked = 0;
  stream_ahead(gone, bytes, [&] { return ++asked < 3; });  // two batches of 512 bytes, then stop
  EXPECT_EQ(asked, 3);
  asked = 0;
  stream_ahead(gone, bytes, [&] { return ++asked > 0; });  // all of it: 2048 batches
  EXPECT_EQ(asked, 2048);
}

TEST(DecodePool, StreamsAheadWithoutFaultingOnFreedMemory) {
  TwoThreads threads;
  c10::InferenceMode inference;
  const size_t bytes = 1 << 20;
  int a = 0, b = 0;
  const StreamShare first{&a, reinterpret_cast<const char*>(&a), sizeof a};
  const StreamShare freed{&b, unmapped(bytes), static_cast<int64_t>(bytes)};
  for (int round = 0; round < 3; ++round) {  // a, then b (unmapped): the worker streams b's share after a
    std::atomic<int> ran{0};
    ASSERT_TRUE(decode_pair([&](int) { ++ran; }, first));
    ASSERT_TRUE(decode_pair([&](int) { ++ran; }, freed));
    EXPECT_EQ(ran.load(), 4);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the worker done streaming
}

}  // namespace
}  // namespace bakallm
