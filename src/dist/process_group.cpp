// Communicator on c10d: TCPStore + ProcessGroupGloo. The one file that names
// a backend (compiled with -DUSE_C10D_GLOO, outside the precompiled header).
#include "dist/communicator.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "util/clock.h"
#include "util/strings.h"

namespace bakallm {

namespace {

constexpr std::chrono::milliseconds kHeartbeat{500};

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

int env_int(const char* name, int fallback, int lowest) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end || n < lowest || n > 1 << 30)
    throw Error(std::string("environment: ") + name + "='" + v + "' is not a whole number >= " + std::to_string(lowest));
  return static_cast<int>(n);
}

c10::intrusive_ptr<c10d::TCPStore> open_store(const DistEnv& env, bool server, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.isServer = server;
  o.numWorkers = env.world_size;
  o.waitWorkers = false;  // agree() says which rank is missing, by name
  o.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
}

std::shared_ptr<::gloo::transport::Device> gloo_device(const DistEnv& env) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");  // every rank on this machine
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

std::optional<DistEnv> DistEnv::from_environment() {
  if (!std::getenv("WORLD_SIZE")) return std::nullopt;
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", -1, 0);
  if (e.rank < 0) throw Error("environment: WORLD_SIZE is set but RANK is not");
  if (e.rank >= e.world_size)
    throw Error("environment: RANK=" + std::to_string(e.rank) + " is not below WORLD_SIZE=" + std::to_string(e.world_size));
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size, 1);
  if (e.local_rank >= e.local_world_size)
    throw Error("environment: LOCAL_RANK=" + std::to_string(e.local_rank) + " is not below LOCAL_WORLD_SIZE=" +
                std::to_string(e.local_world_size));
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500, 1);
  if (e.master_port > 65535) throw Error("environment: MASTER_PORT=" + std::to_string(e.master_port) + " is not a port");
  return e;
}

int threads_per_local_rank() {
  const auto env = DistEnv::from_environment();
  if (!env || env->local_world_size <= 1) return 0;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / env->local_world_size);
}

struct Communicator::Impl {
  DistEnv env;
  CommOptions options;
  c10::intrusive_ptr<c10d::TCPStore> store;      // the main thread's connection
  c10::intrusive_ptr<c10d::ProcessGroup> group;  // the collectives

  // The heartbeat: its own store connection, bumping alive/RANK.
  c10::intrusive_ptr<c10d::TCPStore> beat_store;
  std::mutex beat_mutex;   // the heartbeat's wait
  std::mutex store_mutex;  // beat_store, shared with blame() and report_failure()
  std::condition_variable beat_cv;
  bool stopping = false;
  std::thread beat;

  std::string key(const std::string& what, int rank) const { return what + "/" + std::to_string(rank); }

  // Every rank says it has read what rank 0's store holds under WHAT; rank 0
  // (which hosts the store) waits for all of them, at most UP_TO, before it
  // may leave.
  void hold_store_until_read(const std::string& what, std::chrono::milliseconds up_to) {
    store->add(what + "/read", 1);
    if (env.rank != 0) return;
    const auto deadline = Clock::now() + up_to;
    while (store->add(what + "/read", 0) < env.world_size && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  void start_heartbeat() {
    beat_store = open_store(env, false, options.timeout);
    beat = std::thread([this] {
      std::unique_lock<std::mutex> lock(beat_mutex);
      while (!stopping) {
        try {
          std::lock_guard<std::mutex> use(store_mutex);
          beat_store->add(key("alive", env.rank), 1);
        } catch (const std::exception&) {
          return;  // the store's host is gone: fail() says so
        }
        beat_cv.wait_for(lock, kHeartbeat);
      }
    });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(beat_mutex);
      stopping = true;
    }
    beat_cv.notify_all();
    if (beat.joinable()) beat.join();
  }

  // Waits for KEY/r of every rank; ON_KEY sees each as it arrives. Throws
  // naming the ranks still missing after the timeout.
  void wait_for_ranks(const std::string& what, const std::function<void(int, const std::string&)>& on_key) {
    std::vector<bool> seen(env.world_size, false);
    int missing = env.world_size;
    const auto deadline = Clock::now() + options.timeout;
    while (missing > 0) {
      for (int r = 0; r < env.world_size; ++r) {
        if (seen[r] || !store->check({key(what, r)})) continue;
        seen[r] = true;
        --missing;
        on_key(r, text(store->get(key(what, r))));
      }
      if (missing == 0) break;
      if (Clock::now() > deadline) {
        std::string names;
        for (int r = 0; r < env.world_size; ++r)
          if (!seen[r]) names += (names.empty() ? "" : ", ") + std::to_string(r);
        throw RankFailure("rank " + names + " did not reach '" + what + "' within " +
                          std::to_string(options.timeout.count() / 1000) + " s (rendezvous " + env.master_addr + ":" +
                          std::to_string(env.master_port) + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // Who stopped: a rank that reported its error, else one whose heartbeat stopped.
  std::string blame() {
    const std::string host = "rank 0 (the host of the rendezvous at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + ") is gone";
    try {
      if (!beat_store) return "";
      auto failed = [&]() -> std::string {
        std::lock_guard<std::mutex> use(store_mutex);
        for (int r = 0; r < env.world_size; ++r)
          if (r != env.rank && beat_store->check({key("failed", r)}))
            return "rank " + std::to_string(r) + " failed: " + text(beat_store->get(key("failed", r)));
        return "";
      };
      auto beats = [&] {
        std::lock_guard<std::mutex> use(store_mutex);
        std::vector<int64_t> n(env.world_size);
        for (int r = 0; r < env.world_size; ++r) n[r] = beat_store->add(key("alive", r), 0);
        return n;
      };
      if (auto f = failed(); !f.empty()) return f;
      const auto before = beats();
      std::this_thread::sleep_for(3 * kHeartbeat);  // a live rank beats 3 times meanwhile
      if (auto f = failed(); !f.empty()) return f;
      const auto after = beats();
      std::string stopped;
      for (int r = 0; r < env.world_size; ++r)
        if (r != env.rank && after[r] == before[r]) stopped += (stopped.empty() ? "" : ", ") + std::to_string(r);
      if (!stopped.empty())
        return "rank " + stopped + " stopped answering (no heartbeat for " +
               std::to_string(3 * kHeartbeat.count() / 1000.0).substr(0, 3) + " s: killed or hung)";
      return "";
    } catch (const std::exception&) {
      return env.rank == 0 ? "" : host;
    }
  }
};

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Communicator::~Communicator() = default;

std::unique_ptr<Communicator> Communicator::connect(const DistEnv& env, const CommOptions& options) {
  if (options.backend != "gloo")
    throw Error("distributed backend '" + options.backend + "': this build has gloo (CPU) only");
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  impl->options = options;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    impl->store = open_store(env, env.rank == 0, options.timeout);
  } catch (const std::exception& e) {
    if (env.rank == 0)
      throw Error("rank 0 cannot host the rendezvous on port " + std::to_string(env.master_port) +
                  " (is it in use? give another MASTER_PORT / --master-port): " + first_line(e.what()));
    throw Error("rank " + std::to_string(env.rank) + " cannot reach the rendezvous at " + where + " within " +
                std::to_string(options.timeout.count() / 1000) + " s (is rank 0 running? is MASTER_ADDR right?): " +
                first_line(e.what()));
  }
  if (impl->store->add(impl->key("rank", env.rank), 1) > 1)
    throw Error("RANK " + std::to_string(env.rank) + " is taken by another process of this job (" + where + ")");
  impl->store->set(impl->key("world", env.rank), bytes(std::to_string(env.world_size)));
  struct Mismatch {};
  std::string mismatch;
  try {
    impl->wait_for_ranks("world", [&](int r, const std::string& v) {
      if (v == std::to_string(env.world_size)) return;
      mismatch = "WORLD_SIZE is " + std::to_string(env.world_size) + " here (rank " + std::to_string(env.rank) +
                 ") but " + v + " on rank " + std::to_string(r);
      throw Mismatch{};
    });
  } catch (const Mismatch&) {
  }
  // Until the others have compared (or a moment, if some never come).
  impl->hold_store_until_read("world", std::min<std::chrono::milliseconds>(options.timeout, std::chrono::seconds(5)));
  if (!mismatch.empty()) throw Error(mismatch);
  try {
    auto o = c10d::ProcessGroupGloo::Options::create(options.timeout);
    o->devices.push_back(gloo_device(env));
    impl->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", impl->store), env.rank, env.world_size, o);
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(env.rank) + ": Gloo could not connect the ranks: " + first_line(e.what()));
  }
  impl->start_heartbeat();
  return std::unique_ptr<Communicator>(new Communicator(std::move(impl)));
}

std::unique_ptr<Communicator> Communicator::from_environment(const CommOptions& options) {
  const auto env = DistEnv::from_environment();
  if (!env || env->world_size < 2) return nullptr;
  return connect(*env, options);
}

int Communicator::rank() const { return impl_->env.rank; }
int Communicator::size() const { return impl_->env.world_size; }

void Communicator::fail(const std::exception& cause) {
  if (dynamic_cast<const RankFailure*>(&cause)) throw RankFailure(cause.what());
  const std::string why = first_line(cause.what());
  const auto who = impl_->blame();
  throw RankFailure((who.empty() ? "a collective failed on rank " + std::to_string(rank()) : who) + " [" + why + "]");
}

std::function<void()> Communicator::allreduce_sum_async(torch::Tensor tensor) {
  TORCH_CHECK(tensor.is_contiguous(), "allreduce_sum: the tensor must be contiguous");
  std::vector<at::Tensor> ts{tensor};
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = impl_->group->allreduce(ts, c10d::AllreduceOptions{});
  } catch (const std::exception& e) {
    fail(e);
  }
  return [this, work] {
    try {
      work->wait();
    } catch (const std::exception& e) {
      fail(e);
    }
  };
}

void Communicator::allreduce_sum(torch::Tensor tensor) { allreduce_sum_async(std::move(tensor))(); }

void Communicator::broadcast(torch::Tensor tensor, int root) {
  TORCH_CHECK(tensor.is_contiguous(), "broadcast: the tensor must be contiguous");
  std::vector<at::Tensor> ts{tensor};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  try {
    impl_->group->broadcast(ts, o)->wait();
  } catch (const std::exception& e) {
    fail(e);
  }
}

torch::Tensor Communicator::allgather_rows(const torch::Tensor& tensor) {
  std::vector<at::Tensor> in{tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < size(); ++r) out[0].push_back(torch::empty_like(in[0]));
  try {
    impl_->group->allgather(out, in)->wait();
  } catch (const std::exception& e) {
    fail(e);
  }
  return torch::cat(out[0], 0);
}

std::vector<std::string> Communicator::agree(const std::string& stage, const std::string& error,
                                             const std::string& payload) {
  try {
    return agree_or_throw(stage, error, payload);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(e);
  }
}

std::vector<std::string> Communicator::agree_or_throw(const std::string& stage, const std::string& error,
                                                      const std::string& payload) {
  auto& s = *impl_;
  const std::string what = "agree/" + stage;
  s.store->set(s.key(what, rank()), bytes(error.empty() ? "ok\n" + payload : "error\n" + error));
  std::vector<std::string> payloads(size());
  std::string first_error;
  s.wait_for_ranks(what, [&](int r, const std::string& v) {
    const auto nl = v.find('\n');
    const bool ok = v.compare(0, nl, "ok") == 0;
    payloads[r] = v.substr(nl + 1);
    if (!ok && first_error.empty() && r != rank()) first_error = "rank " + std::to_string(r) + ": " + payloads[r];
  });
  s.hold_store_until_read(what, s.options.timeout);
  if (!first_error.empty() && error.empty()) throw Error("stopping: " + first_error);
  return payloads;
}

void Communicator::report_failure(const std::string& error) noexcept {
  try {
    std::lock_guard<std::mutex> use(impl_->store_mutex);
    if (impl_->beat_store) impl_->beat_store->set(impl_->key("failed", rank()), bytes(first_line(error)));
  } catch (...) {
  }
}

}  // namespace bakallm
