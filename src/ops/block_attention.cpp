#include "ops/block_attention.h"

#include <limits>

#include "ops/dropout.h"
#include "ops/matmul.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr float kInf = std::numeric_limits<float>::infinity();

// One call's geometry: which blocks exist, which a query block may see, and
// the mask and dropout multipliers of a block.
struct Blocks {
  AttentionMask mask;
  BlockAttentionOptions o;
  int64_t G = 0, Tq = 0, Tk = 0;
  uint64_t seed = 0;  // of the dropout, when it drops

  bool drops() const { return o.training && o.dropout > 0.0; }
  int64_t rows(int64_t i0) const { return std::min(o.block, Tq - i0); }
  int64_t cols(int64_t j0) const { return std::min(o.block, Tk - j0); }
  // The key blocks [0, end) that query rows [i0, i0+bq) may see (causal: up to before + the last row).
  int64_t keys_end(int64_t i0, int64_t bq) const {
    return mask.causal ? std::min(Tk, mask.before + i0 + bq) : Tk;
  }
  // Dropout multipliers of the block, or undefined when nothing is dropped.
  Tensor dropped(int64_t i0, int64_t bq, int64_t j0, int64_t bk, const torch::Device& device) const {
    if (!drops()) return {};
    return dropout_scales(seed, o.dropout, o.batch, G, Tq, Tk, i0, bq, j0, bk).to(device);
  }
  Tensor scores(const Tensor& qi, const Tensor& Kj, int64_t i0, int64_t j0) const {
    auto s = matmul_nt(qi, Kj, o.compute).mul_(o.scale);  // [G, bq, bk]
    const auto v = visible_keys(mask, i0, qi.size(1), j0, Kj.size(1), s.device());
    return v.defined() ? s.masked_fill_(v.logical_not(), -kInf) : s;
  }
};

// a · b for a [G, M, K], b [G, K, N] (any strides) in COMPUTE.
Tensor mm(const Tensor& a, const Tensor& b, torch::ScalarType compute) { return matmul_nt(a, b.transpose(-2, -1), compute); }

class BlockAttention : public torch::autograd::Function<BlockAttention> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& q, const Tensor& K, const Tensor& V,
                        const AttentionMask& mask, const BlockAttentionOptions& options) {
    Blocks b;
    b.mask = mask;
    b.o = options;
    b.G = q.size(0);
    b.Tq = q.size(1);
    b.Tk = K.size(1);
    if (b.drops()) b.seed = draw_dropout_seed();
    auto out = torch::empty({b.G, b.Tq, V.size(2)}, V.options());
    auto lse = torch::empty({b.G, b.Tq}, q.options().dtype(torch::kFloat));
    for (int64_t i0 = 0; i0 < b.Tq; i0 += b.o.block) {
      const int64_t bq = b.rows(i0);
      const auto qi = q.narrow(1, i0, bq);
      auto m = torch::full({b.G, bq}, -kInf, lse.options());  // running row max
      auto l = torch::zeros({b.G, bq}, lse.options());        // running sum of exp(s - m)
      auto acc = torch::zeros({b.G, bq, V.size(2)}, out.options());
      for (int64_t j0 = 0, end = b.keys_end(i0, bq); j0 < end; j0 += b.o.block) {
        const int64_t bk = b.cols(j0);
        const auto s = b.scores(qi, K.narrow(1, j0, bk), i0, j0);  // [G, bq, bk]
        const auto m_new = torch::maximum(m, std::get<0>(s.max(-1)));
        const auto m_use = m_new.masked_fill(m_new.eq(-kInf), 0.0f);  // a row with nothing seen yet: exp(-inf) = 0
        auto p = (s - m_use.unsqueeze(-1)).exp_();
        const auto correction = (m - m_use).exp_();
        l = l.mul_(correction).add_(p.sum(-1));
        const auto z = b.dropped(i0, bq, j0, bk, p.device());
        if (z.defined()) p.mul_(z);
        acc = acc.mul_(correction.unsqueeze(-1)).add_(mm(p, V.narrow(1, j0, bk), b.o.compute));
        m = m_new;
      }
      out.narrow(1, i0, bq).copy_(acc / l.unsqueeze(-1));
      lse.narrow(1, i0, bq).copy_(m + l.log());
    }
    ctx->save_for_backward({q, K, V, out, lse});
    auto& d = ctx->saved_data;
    save_weighting(mask, options, ctx);
    d["compute"] = static_cast<int64_t>(options.compute);
    d["block"] = options.block;
    d["seed"] = static_cast<int64_t>(b.seed);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &K = saved[1], &V = saved[2], &out = saved[3], &lse = saved[4];
    Blocks b;
    auto& d = ctx->saved_data;
    const auto [mask, weighting] = saved_weighting(ctx);
    b.mask = mask;
    b.o = BlockAttentionOptions{weighting, static_cast<torch::ScalarType>(d["compute"].toInt()), d["block"].toInt()};
    b.G = q.size(0);
    b.Tq = q.size(1);
    b.Tk = K.size(1);
    b.seed = static_cast<uint64_t>(d["seed"].toInt());
    const auto dO = grads[0].contiguous();
    const auto delta = (dO * out).sum(-1);  // [G, Tq] rowsum(dO ⊙ out) = rowsum(p ⊙ dp)
    auto dq = torch::zeros_like(q), dK = torch::zeros_like(K), dV = torch::zeros_like(V);
    const auto compute = b.o.compute;
    for (int64_t i0 = 0; i0 < b.Tq; i0 += b.o.block) {
      const int64_t bq = b.rows(i0);
      const auto qi = q.narrow(1, i0, bq), dOi = dO.narrow(1, i0, bq);
      const auto lse_i = lse.narrow(1, i0, bq).unsqueeze(-1), delta_i = delta.narrow(1, i0, bq).unsqueeze(-1);
      auto dqi = dq.narrow(1, i0, bq);
      for (int64_t j0 = 0, end = b.keys_end(i0, bq); j0 < end; j0 += b.o.block) {
        const int64_t bk = b.cols(j0);
        const auto Kj = K.narrow(1, j0, bk), Vj = V.narrow(1, j0, bk);
        const auto p = b.scores(qi, Kj, i0, j0).sub_(lse_i).exp_();  // [G, bq, bk] the weights
        const auto z = b.dropped(i0, bq, j0, bk, p.device());
        dV.narrow(1, j0, bk).add_(mm((z.defined() ? p * z : p).transpose(-2, -1), dOi, compute));
        auto dp = matmul_nt(dOi, Vj, compute);  // [G, bq, bk] gradient of the dropped weights
        if (z.defined()) dp.mul_(z);
        const auto ds = dp.sub_(delta_i).mul_(p).mul_(b.o.scale);  // of the scaled scores' input
        dqi.add_(mm(ds, Kj, compute));
        dK.narrow(1, j0, bk).add_(mm(ds.transpose(-2, -1), qi, compute));
      }
    }
    return {dq, dK, dV, Tensor(), Tensor()};
  }
};

}  // namespace

void save_weighting(const AttentionMask& mask, const AttentionWeightsOptions& options, AutogradContext* ctx) {
  auto& d = ctx->saved_data;
  d["causal"] = mask.causal;
  d["before"] = mask.before;
  d["past"] = mask.past;
  if (mask.keep_past.defined()) d["keep_past"] = mask.keep_past;
  d["scale"] = options.scale;
  d["dropout"] = options.dropout;
  d["training"] = options.training;
  d["batch"] = options.batch;
}

std::pair<AttentionMask, AttentionWeightsOptions> saved_weighting(AutogradContext* ctx) {
  auto& d = ctx->saved_data;
  return {AttentionMask{d["causal"].toBool(), d["before"].toInt(), d["past"].toInt(),
                        d.count("keep_past") ? d["keep_past"].toTensor() : Tensor()},
          AttentionWeightsOptions{d["scale"].toDouble(), d["dropout"].toDouble(), d["training"].toBool(),
                                  d["batch"].toInt()}};
}

Tensor visible_keys(const AttentionMask& mask, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                    const torch::Device& device) {
  Tensor v;
  const auto opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  if (mask.causal && j0 + cols - 1 > mask.before + i0) {  // some key lies past some row's diagonal
    auto i = torch::arange(i0, i0 + rows, opts).unsqueeze(1), j = torch::arange(j0, j0 + cols, opts).unsqueeze(0);
    v = j.le(i + mask.before);  // [rows, cols]
  }
  if (mask.keep_past.defined() && j0 < mask.past) {
    auto past = torch::arange(j0, j0 + cols, opts).lt(mask.past);                            // [cols]
    auto hidden = past.unsqueeze(0).logical_and(mask.keep_past.logical_not().unsqueeze(1));  // [G, cols]
    auto seen = hidden.logical_not().unsqueeze(1);                                           // [G, 1, cols]
    v = v.defined() ? seen.logical_and(v) : seen;
  }
  return v;
}

Tensor block_attention(const Tensor& q, const Tensor& K, const Tensor& V, const AttentionMask& mask,
                       const BlockAttentionOptions& o) {
  TORCH_CHECK(q.dim() == 3 && K.dim() == 3 && V.dim() == 3 && q.size(0) == K.size(0) && K.size(1) == V.size(1) &&
                  q.size(2) == K.size(2),
              "block_attention: q [G, Tq, F], K [G, Tk, F], V [G, Tk, Dv], got ", q.sizes(), " ", K.sizes(), " ",
              V.sizes());
  TORCH_CHECK(o.block > 0, "block_attention: block must be positive");
  TORCH_CHECK(!mask.keep_past.defined() || mask.keep_past.numel() == q.size(0), "block_attention: keep_past must be [G]");
  return BlockAttention::apply(q, K, V, mask, o);
}

}  // namespace bakallm
