// SharedInput (model/shared_input.h): layers reading one input, packed side by
// side, give the same products through one product inside a scope as each
// alone (float32, bfloat16 and Q8_0 weights, a bias added after); outside a
// scope, for another tensor, or where autograd records, each layer runs its
// own product. A model's stored weights pack each block's groups, and
// decoding with them equals decoding without at 1e-5.
#include <gtest/gtest.h>

#include "infer/decoder.h"
#include "model/baka_lm.h"
#include "model/linear.h"
#include "model/shared_input.h"
#include "small_config.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

struct Layers {
  Linear a{64, 96}, b{64, 32, /*bias=*/true}, c{64, 160};
  std::vector<Linear*> all() { return {&a, &b, &c}; }
};

void store(Layers& l, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  for (auto* m : l.all()) {
    if (dtype == torch::kChar) {
      ASSERT_TRUE((*m)->store_q8());
    } else {
      (*m)->weight.set_data((*m)->weight.to(dtype));
      (*m)->set_compute_dtype(dtype);
    }
  }
}

TEST(SharedInput, OneProductEqualsEachLayerAlone) {
  for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kChar}) {
    for (int64_t rows : {1, 3, 40}) {  // the row kernel, and oneDNN beyond its rows
      torch::manual_seed(5);
      Layers l;
      store(l, dtype);
      const auto group = SharedInput::make({l.a.get(), l.b.get(), l.c.get()});
      torch::InferenceMode inference;
      const auto x = torch::randn({1, rows, 64});
      std::vector<torch::Tensor> alone;
      for (auto* m : l.all()) alone.push_back((*m)(x));
      ASSERT_TRUE(group->pack()) << dtype;
      const auto stored = [&](Linear& m) { return m->stored_weights()[0]->data_ptr(); };
      const int64_t row_bytes = dtype == torch::kChar ? 64 : 64 * c10::elementSize(dtype);
      EXPECT_EQ(static_cast<char*>(stored(l.b)), static_cast<char*>(stored(l.a)) + 96 * row_bytes);  // side by side
      EXPECT_EQ(static_cast<char*>(stored(l.c)), static_cast<char*>(stored(l.b)) + 32 * row_bytes);
      EXPECT_FALSE(group->columns(*l.a, x).defined());  // no scope yet
      {
        const SharedInput::Scope scope(group, x);
        for (size_t i = 0; i < alone.size(); ++i) {
          auto* m = l.all()[i];
          ASSERT_TRUE(group->columns(**m, x).defined()) << dtype << " " << rows;
          EXPECT_TRUE(test::all_close((*m)(x), alone[i])) << dtype << " layer " << i << " rows " << rows;
        }
        EXPECT_FALSE(group->columns(*l.a, x.clone()).defined());  // another tensor: its own product
      }
      EXPECT_FALSE(group->columns(*l.a, x).defined());  // the scope closed
      for (size_t i = 0; i < alone.size(); ++i)  // each alone, now reading its rows of the packed weights
        EXPECT_TRUE(test::all_close((*l.all()[i])(x), alone[i]));
    }
  }
}

TEST(SharedInput, RefusesLayersThatDiffer) {
  Layers l;
  {
    torch::NoGradGuard no_grad;
    l.b->weight.set_data(l.b->weight.to(torch::kBFloat16));
  }
  l.b->set_compute_dtype(torch::kBFloat16);
  const auto before = l.a->weight.data_ptr();
  EXPECT_FALSE(SharedInput::make({l.a.get(), l.b.get()})->pack());  // float32 beside bfloat16
  EXPECT_EQ(l.a->weight.data_ptr(), before);
  Linear wide(96, 32);
  EXPECT_FALSE(SharedInput::make({l.a.get(), wide.get()})->pack());  // another input width
  l.c->set_compute_dtype(torch::kBFloat16);  // float32 weights computed in bfloat16: a cast each product
  EXPECT_FALSE(SharedInput::make({l.a.get(), l.c.get()})->pack());
}

TEST(SharedInput, NoScopeWhereAutogradRecords) {
  Layers l;
  const auto group = SharedInput::make({l.a.get(), l.c.get()});
  ASSERT_TRUE(group->pack());
  const auto x = torch::randn({2, 64});
  const SharedInput::Scope scope(group, x);  // grad mode on, the weights want gradients
  EXPECT_FALSE(group->columns(*l.a, x).defined());
  l.a(x).sum().backward();
  ASSERT_TRUE(l.a->weight.grad().defined());  // the gradient reaches the parameter, a view of the packed rows
  EXPECT_TRUE(test::all_close(l.a->weight.grad(), x.sum(0).expand({96, 64})));
}

TEST(SharedInput, StoredModelWeightsPackAndDecodeAsBefore) {
  auto c = test::small_config(64, 2, 3, 96, 5, 50);  // widths a multiple of 32: the row kernel
  auto exact = make_model(c, 7), packed = make_model(c, 7);
  exact->eval();
  packed->eval();
  packed->store_linear_weights(torch::kFloat);
  auto& layer = packed->model->layer(0);
  const auto* q = layer.attn->qkv->q->weight.data_ptr<float>();
  EXPECT_EQ(layer.attn->qkv->k->weight.data_ptr<float>(), q + 64 * 64);  // h's products side by side
  EXPECT_EQ(layer.mlp->fc_gate->weight.data_ptr<float>(), q + 2 * 64 * 64);
  EXPECT_EQ(layer.mega_gate->weight.data_ptr<float>(), layer.attn->qkv->v->weight.data_ptr<float>() + 64 * 64);  // m's
  torch::manual_seed(8);
  const auto ids = torch::randint(0, 50, {1, 12}, torch::kLong);
  Decoder a(exact, 1), b(packed, 1);
  for (int64_t t = 0; t < 12; ++t)
    EXPECT_TRUE(test::all_close(b.feed(ids.narrow(1, t, 1)), a.feed(ids.narrow(1, t, 1)))) << "token " << t;
}

}  // namespace
}  // namespace bakallm
