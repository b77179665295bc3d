#include "model/state.h"

#include <algorithm>

#include "ops/fast_tensor.h"
#include "util/error.h"
#include "util/huge_pages.h"

namespace bakallm {

WindowOffsets WindowOffsets::shifted(int64_t r) const {
  WindowOffsets o = *this;
  o.start += r;
  if (rows.defined()) o.rows = rows + r;
  return o;
}

void RowBuffer::reserve(std::vector<int64_t> shape, const torch::TensorOptions& options) {
  data_ = empty_huge(shape, options);  // a decoded token reads every key and value
  last_ = torch::Tensor();
  length_ = 0;
  reserved_ = true;
}

namespace {

// R [B, n, ...] float32 into rows [first, first + n) of DATA [B, capacity, ...]
// float32 or bfloat16 (rounded to nearest even, as copy_ rounds), on the CPU
// with both contiguous; false, copying nothing, otherwise. One decoded token
// appends to three buffers a layer: this is the copy without the two views
// and the dispatch of copy_.
bool copy_rows(const torch::Tensor& r, const torch::Tensor& data, int64_t first) {
  if (!r.device().is_cpu() || !data.device().is_cpu() || r.scalar_type() != torch::kFloat || !r.is_contiguous() ||
      !data.is_contiguous() || (data.scalar_type() != torch::kFloat && data.scalar_type() != torch::kBFloat16))
    return false;
  const int64_t B = r.size(0), n = r.size(1), row = r.numel() / std::max<int64_t>(1, B * n), capacity = data.size(1);
  const float* from = r.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    const float* src = from + b * n * row;
    const int64_t offset = (b * capacity + first) * row;
    if (data.scalar_type() == torch::kFloat) {
      std::copy(src, src + n * row, data.data_ptr<float>() + offset);
    } else {
      at::BFloat16* dst = data.data_ptr<at::BFloat16>() + offset;
      for (int64_t i = 0; i < n * row; ++i) dst[i] = at::BFloat16(src[i]);
    }
  }
  return true;
}

}  // namespace

torch::Tensor RowBuffer::append(const torch::Tensor& r) {
  const int64_t n = r.size(1);
  if (reserved_) {
    TORCH_CHECK(length_ + n <= data_.size(1), "RowBuffer: ", length_ + n, " rows exceed the capacity ", data_.size(1));
    TORCH_CHECK(r.dim() == data_.dim() && r.size(0) == data_.size(0) && r.sizes().slice(2) == data_.sizes().slice(2),
                "RowBuffer: rows ", r.sizes(), " do not fit a buffer of ", data_.sizes());
    if (!copy_rows(r, data_, length_)) data_.narrow(1, length_, n).copy_(r);
  } else {
    data_ = length_ ? torch::cat({data_, r}, 1) : r;
    last_ = r;
    last_first_ = length_;
  }
  length_ += n;
  return rows();
}

torch::Tensor RowBuffer::rows() const { return reserved_ ? narrow_rows(data_, 1, 0, length_) : data_; }

torch::Tensor RowBuffer::rows_from(int64_t first) const {
  if (!reserved_ && last_.defined() && first == last_first_) return last_;
  return first == 0 ? rows() : narrow_rows(rows(), 1, first, length_ - first);
}

WindowOffsets OpenWindow::next_offsets(const std::vector<OpenWindow*>& windows, torch::Device device) {
  if (windows.size() == 1) return windows[0]->offsets.shifted(windows[0]->rows());
  std::vector<torch::Tensor> rows;
  for (const auto* w : windows) {
    const auto o = w->offsets.shifted(w->rows());
    rows.push_back(o.rows.defined() ? o.rows.to(device)
                                    : torch::full({w->batch}, o.start, torch::TensorOptions().dtype(torch::kLong).device(device)));
  }
  WindowOffsets o;
  o.rows = torch::cat(rows);
  return o;
}

LayerCache LayerWindow::cache() const {
  const auto source = sources.rows();
  const auto dtype = source.scalar_type();  // the model's: a bfloat16 cache is handed on widened
  return {source, keys.rows_from(past).to(dtype), values.rows_from(past).to(dtype)};
}


void State::detach_() {
  if (memory.defined()) memory = memory.detach();
  for (auto& c : layers) {
    if (c.output.defined()) c.output = c.output.detach();
    if (c.k.defined()) c.k = c.k.detach();
    if (c.v.defined()) c.v = c.v.detach();
  }
}

void State::reset_rows(const torch::Tensor& mask) {
  if (fresh()) return;  // a fresh stream starts every row anyway
  const auto B = memory.size(0);
  if (!row_seen.defined()) row_seen = torch::full({B}, seen, torch::TensorOptions().dtype(torch::kLong).device(memory.device()));
  row_seen = torch::where(mask.to(row_seen.device()), torch::zeros_like(row_seen), row_seen);
  const auto m = mask.to(memory.device());
  fresh_rows = fresh_rows.defined() ? fresh_rows.logical_or(m) : m.clone();
}

WindowOffsets State::offsets() const {
  WindowOffsets o;
  o.start = seen;
  o.rows = row_seen;
  if (fresh_rows.defined()) o.keep_past = fresh_rows.logical_not();
  return o;
}

void State::advance(int64_t tokens) {
  seen += tokens;
  if (row_seen.defined()) row_seen = row_seen + tokens;
  fresh_rows = torch::Tensor();
  windows += 1;
}

State State::map_rows(const std::function<torch::Tensor(const torch::Tensor&)>& f) const {
  if (fresh()) return *this;
  State s = *this;
  s.row_seen = row_seen.defined() ? row_seen : torch::full({memory.size(0)}, seen, torch::TensorOptions().dtype(torch::kLong).device(memory.device()));
  auto map = [&](torch::Tensor& t) {
    if (t.defined()) t = f(t);
  };
  map(s.memory);
  map(s.row_seen);
  if (s.fresh_rows.defined()) s.fresh_rows = f(s.fresh_rows.to(torch::kUInt8)).to(torch::kBool);
  for (auto& c : s.layers) {
    map(c.output);
    map(c.k);
    map(c.v);
  }
  return s;
}

State State::rows(int64_t begin, int64_t count) const {
  return map_rows([&](const torch::Tensor& t) { return t.narrow(0, begin, count).contiguous(); });
}

State State::resized(int64_t n) const {
  if (fresh()) return *this;
  const int64_t B = memory.size(0), kept = std::min(B, n);
  auto index = torch::arange(n, torch::kLong).clamp_max(kept - 1).to(memory.device());  // the new rows: copies, then reset
  State s = map_rows([&](const torch::Tensor& t) { return t.index_select(0, index); });
  if (n > kept) s.reset_rows(torch::arange(n, torch::kLong).ge(kept));
  return s;
}

State State::to(torch::Device device) const {
  auto move = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
  State s = *this;
  s.memory = move(memory);
  s.row_seen = move(row_seen);
  s.fresh_rows = move(fresh_rows);
  for (auto& c : s.layers) {
    c.output = move(c.output);
    c.k = move(c.k);
    c.v = move(c.v);
  }
  return s;
}

std::vector<std::pair<std::string, torch::Tensor>> State::tensors() const {
  const State& s = *this;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (s.memory.defined()) out.emplace_back("memory", s.memory);
  if (s.row_seen.defined()) out.emplace_back("row_seen", s.row_seen);
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const auto p = "layers." + std::to_string(i) + ".";
    out.emplace_back(p + "output", s.layers[i].output);
    out.emplace_back(p + "k", s.layers[i].k);
    out.emplace_back(p + "v", s.layers[i].v);
  }
  return out;
}

State State::from_tensors(const std::map<std::string, torch::Tensor>& t, int64_t layers, const std::string& source) {
  State s;
  if (!t.count("memory")) return s;  // saved before the first step
  s.memory = t.at("memory");
  if (t.count("row_seen")) s.row_seen = t.at("row_seen");
  if (!t.count("layers.0.k")) return s;  // a model without the XL cache keeps none
  for (int64_t i = 0; i < layers; ++i) {
    const auto p = "layers." + std::to_string(i) + ".";
    if (!t.count(p + "k")) throw file_error(source, "missing " + p + "k");
    for (const char* part : {"output", "v"})
      if (!t.count(p + part)) throw file_error(source, "missing " + p + part);
    s.layers.push_back({t.at(p + "output"), t.at(p + "k"), t.at(p + "v")});
  }
  return s;
}

}  // namespace bakallm
