#include "model/state.h"

namespace bakallm {

void State::detach_() {
  if (memory.defined()) memory = memory.detach();
  for (auto& c : layers) {
    if (c.output.defined()) c.output = c.output.detach();
    if (c.k.defined()) c.k = c.k.detach();
    if (c.v.defined()) c.v = c.v.detach();
  }
}

State State::to(torch::Device device) const {
  auto move = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
  State s = *this;
  s.memory = move(memory);
  for (auto& c : s.layers) {
    c.output = move(c.output);
    c.k = move(c.k);
    c.v = move(c.v);
  }
  return s;
}

}  // namespace bakallm
