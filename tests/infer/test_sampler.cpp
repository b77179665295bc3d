// The sampler: its options, its seeded determinism, the tokens each filter
// keeps (against a full sort of every token, as the sampler once did), and
// draws in proportion to the kept probabilities.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "infer/sampler.h"
#include "util/error.h"

namespace bakallm {
namespace {

TEST(Sampler, OptionsAndDeterminism) {
  auto logits = torch::tensor({1.0f, 3.0f, 2.0f, 0.5f});
  SamplingOptions so;
  so.top_k = 1;
  EXPECT_EQ(Sampler(so).sample(logits), 1);  // top-k 1 is greedy
  so = {};
  so.top_p = 0.01;
  EXPECT_EQ(Sampler(so).sample(logits), 1);
  so = {};
  so.temperature = 0;
  so.repeat_penalty = 100;
  EXPECT_EQ(Sampler(so).sample(logits, {1}), 2);  // the repeated best is pushed down
  so = {};
  so.seed = 5;
  Sampler a(so), b(so);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.sample(logits), b.sample(logits));
  so.top_p = 0;
  EXPECT_THROW(Sampler{so}, Error);
}

TEST(Sampler, GreedyIsTheFirstLargestAndLeavesTheLogits) {
  SamplingOptions o;
  o.temperature = 0;
  const auto logits = torch::tensor({1.0f, 3.0f, 0.5f, 3.0f, -2.0f});
  EXPECT_EQ(Sampler(o).sample(logits), 1);  // ties: the first, as torch.argmax
  const auto wide = torch::randn({32000});
  EXPECT_EQ(Sampler(o).sample(wide), wide.argmax().item<int64_t>());
  o.repeat_penalty = 10;
  const auto before = logits.clone();
  EXPECT_EQ(Sampler(o).sample(logits, {1, 3}), 0);  // 3/10 < 1
  EXPECT_TRUE(torch::equal(logits, before));        // penalised in a copy
}

// The kept tokens by sorting all V: the shortest prefix of the descending
// order (ties by id) that top-k, top-p and min-p allow.
std::vector<int64_t> support_by_full_sort(const std::vector<float>& p, const SamplingOptions& o) {
  const int64_t V = static_cast<int64_t>(p.size());
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (o.top_k == 0 && o.top_p >= 1 && o.min_p == 0) return order;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  int64_t keep = V;
  if (o.top_k > 0) keep = std::min(keep, o.top_k);
  if (o.top_p < 1) {
    double mass = 0;
    int64_t below = 0;
    for (int64_t i : order)
      if ((mass += p[i]) < o.top_p) ++below;
      else break;
    keep = std::min(keep, below + 1);
  }
  if (o.min_p > 0) {
    int64_t at_least = 0;
    for (int64_t i : order) at_least += p[i] >= o.min_p * p[order[0]];
    keep = std::min(keep, std::max<int64_t>(at_least, 1));
  }
  order.resize(static_cast<size_t>(std::min(keep, V)));
  return order;
}

TEST(Sampler, KeepsWhatAFullSortKeeps) {
  torch::manual_seed(3);
  int cases = 0;
  for (double scale : {0.3, 3.0, 12.0}) {
    for (bool ties : {false, true}) {
      auto logits = torch::randn({3000}) * scale;
      if (ties) logits = (logits * 2).round() / 2;  // many equal probabilities
      const auto probs = torch::softmax(logits, 0);
      const std::vector<float> p(probs.data_ptr<float>(), probs.data_ptr<float>() + probs.numel());
      for (int64_t top_k : {0, 1, 7, 3000})
        for (double top_p : {1.0, 0.9, 0.3, 0.999999})
          for (double min_p : {0.0, 0.001, 0.05, 0.5}) {
            SamplingOptions o;
            o.top_k = top_k;
            o.top_p = top_p;
            o.min_p = min_p;
            auto want = support_by_full_sort(p, o), got = sampling_support(p.data(), 3000, o);
            if (top_k > 0 || top_p < 1 || min_p > 0) {  // a set, in whatever order
              std::sort(want.begin(), want.end());
              std::sort(got.begin(), got.end());
            }
            EXPECT_EQ(got, want)
                << "scale " << scale << " ties " << ties << " top_k " << top_k << " top_p " << top_p << " min_p " << min_p;
            ++cases;
          }
    }
  }
  EXPECT_EQ(cases, 3 * 2 * 4 * 4 * 4);
}

TEST(Sampler, DrawsInProportionToTheKeptProbabilities) {
  const auto logits = torch::tensor({1.0f, 3.0f, 2.0f, 0.5f, -1.0f, 2.5f});
  const int n = 40000;
  for (int filter = 0; filter < 3; ++filter) {
    SamplingOptions o;
    o.temperature = 1.5;
    o.seed = 11;
    if (filter == 1) o.top_k = 3;    // tokens 1, 5, 2
    if (filter == 2) o.min_p = 0.3;  // p >= 0.3 p(1): tokens 1, 5, 2 (0.51), 0 (0.26 < 0.3) is out
    auto p = torch::softmax(logits / o.temperature, 0);
    std::vector<double> want(6);
    for (int i = 0; i < 6; ++i) want[i] = p[i].item<double>();
    if (filter > 0) {
      for (int i : {0, 3, 4}) want[i] = 0;
      const double kept = want[1] + want[2] + want[5];
      for (auto& w : want) w /= kept;
    }
    Sampler s(o);
    std::vector<int> count(6);
    for (int k = 0; k < n; ++k) ++count[static_cast<size_t>(s.sample(logits))];
    for (int i = 0; i < 6; ++i) {
      const double sd = std::sqrt(n * want[i] * (1 - want[i]));
      EXPECT_NEAR(count[i], n * want[i], 5 * sd + 1e-9) << "filter " << filter << " token " << i;
    }
  }
}

TEST(Sampler, NaNLogitsAreAnError) {
  const auto logits = torch::full({5}, std::nanf(""));
  SamplingOptions o;
  EXPECT_THROW(Sampler(o).sample(logits), Error);
  o.top_p = 0.5;
  EXPECT_THROW(Sampler(o).sample(logits), Error);
}

}  // namespace
}  // namespace bakallm
