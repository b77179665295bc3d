#include "model/flops.h"

#include "model/linear.h"

namespace bakallm {

std::vector<std::pair<std::string, int64_t>> parameter_groups(BakaLM& model) {
  std::vector<std::pair<std::string, int64_t>> groups = {
      {"embed_in", 0}, {"layers", 0}, {"memory_solidifer", 0}, {"memory/sep tokens", 0},
      {"lm_norm", 0},  {"embed_out", 0}};
  auto group_of = [](const std::string& name) -> size_t {
    auto starts = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
    if (starts("model.embed_in.") || starts("gpt_neox.embed_in.")) return 0;
    if (starts("model.layers.") || starts("gpt_neox.layers.")) return 1;
    if (starts("model.memory_injector.memory_solidifer.")) return 2;
    if (starts("model.memory_injector.")) return 3;
    if (starts("lm_norm.") || starts("gpt_neox.final_layer_norm.")) return 4;
    return 5;
  };
  int64_t total = 0;
  for (const auto& p : model->named_parameters()) {
    groups[group_of(p.key())].second += p.value().numel();
    total += p.value().numel();
  }
  for (const auto& m : model->named_modules()) {  // a weight stored in 8 bits counts as many parameters
    const auto linear = std::dynamic_pointer_cast<LinearImpl>(m.value());
    if (!linear || !linear->q8().defined()) continue;
    groups[group_of(m.key() + ".weight")].second += linear->q8().q.numel();
    total += linear->q8().q.numel();
  }
  groups.emplace_back("total", total);
  return groups;
}

FlopCount flops_per_token(const Config& c) {
  const double D = c.hidden_dim, I = c.intermediate_dim, V = c.vocab_size, L = c.num_layers;
  const double M = c.num_memory_tokens, W = c.window_size;
  const double T = c.extended_window();  // rows of this window
  const double Tp = T;                   // rows of the cached previous window
  const double mm = 2.0;                 // FLOPs per multiply-add
  if (c.is_gpt_neox()) {  // a window of W tokens, causal: on average (W+1)/2 keys per query
    const double linear = mm * W * (4 * D * D + 2 * D * I);
    const double attention = mm * W * ((W + 1) / 2) * 2 * D;
    const double window = L * (linear + attention) + mm * W * D * V;
    return FlopCount{window / W, 3 * window / W, L * attention / window};
  }

  const double layer_linear = mm * (T * D * D * 3        // q, k, v
                                    + 2 * Tp * D * D     // past_k_gate on 2·Tp rows of D
                                    + Tp * D * D         // past_v_gate
                                    + T * D * D * 3      // output_gate, mlp_attn_gate, mega_gate
                                    + T * D * I * 3);    // fc_up, fc_gate, fc_down
  const double layer_attention = mm * (T * (Tp + T) * 2 * D + T * (Tp + T) * D);
  const double solid_linear = mm * (M * D * D + 2 * T * D * D + M * D * D * 3 + M * D * I * 3);
  const double solid_attention = mm * (M * T * 2 * D + M * T * D);
  const double head = mm * W * D * V;

  const double attention = L * layer_attention + solid_attention;
  const double window = L * layer_linear + solid_linear + attention + head;
  FlopCount f;
  f.forward_per_token = window / W;
  f.training_per_token = 3 * f.forward_per_token;
  f.attention_share = attention / window;
  return f;
}

}  // namespace bakallm
