#include "infer/decoder.h"

#include "ops/fast_tensor.h"

namespace bakallm {

Decoder::Decoder(BakaLM model, int64_t batch) : model_(std::move(model)), batch_(batch) {}

Decoder::Decoder(BakaLM model, int64_t batch, State boundary)
    : model_(std::move(model)), batch_(batch), state_(std::move(boundary)) {}

void Decoder::open_window() {
  auto& net = model_->model;
  window_ = net->open_window(state_, batch_, model_->config().extended_window());
  net->extend(*window_, net->memory_injector->head(net->memory_injector->prefix(state_, batch_)));
  in_window_ = 0;
}

void Decoder::close_window() {
  auto& net = model_->model;
  net->extend(*window_, net->memory_injector->tail(batch_, net->embed_in->weight.scalar_type()));
  net->close_window(*window_, state_, in_window_);
  window_.reset();
  in_window_ = 0;
}

torch::Tensor Decoder::feed_stateless(const torch::Tensor& ids) {
  const int64_t W = model_->config().window_size;
  for (int64_t p = 0, n = ids.size(1); p < n;) {
    if (in_window_ == W) {  // the window is full: the next token starts a new one
      state_.seen += W;
      in_window_ = 0;
    }
    const int64_t take = std::min(W - in_window_, n - p);
    auto piece = ids.narrow(1, p, take);
    window_ids_ = in_window_ == 0 ? piece : torch::cat({window_ids_, piece}, 1);
    in_window_ += take;
    p += take;
  }
  return model_->gpt_neox(window_ids_).select(1, in_window_ - 1);
}

int64_t Decoder::attended_bytes() const {
  int64_t bytes = 0;
  if (window_)
    for (const auto& l : window_->layers) bytes += l.keys.rows().nbytes() + l.values.rows().nbytes();
  return bytes;
}

torch::Tensor Decoder::feed(const torch::Tensor& ids_in) {
  c10::InferenceMode inference;  // no autograd bookkeeping at all: cheaper than NoGradGuard per op
  TORCH_CHECK(ids_in.dim() == 2 && ids_in.size(0) == batch_ && ids_in.size(1) > 0, "Decoder::feed: ids must be [B, n>0]");
  const auto& device = model_->embed_out->weight.device();
  const auto ids = ids_in.device() == device ? ids_in : ids_in.to(device);
  if (model_->gpt_neox) return model_->head(feed_stateless(ids));
  const int64_t W = model_->config().window_size;
  auto& net = model_->model;
  torch::Tensor hidden;  // [B, D] after the last token read
  for (int64_t p = 0, n = ids.size(1); p < n;) {
    const int64_t take = window_ ? std::min(W - in_window_, n - p) : std::min(W, n - p);
    const auto x = net->embed_in(ids.narrow(1, p, take));  // [B, take, D]
    if (!window_ && take == W) {                           // a whole window: the batched forward (prefill)
      hidden = net->window(x, state_).select(1, W - 1);
    } else {
      if (!window_) open_window();
      hidden = select_rows(net->extend(*window_, x), 1, take - 1);
      in_window_ += take;
      if (in_window_ == W) close_window();
    }
    p += take;
  }
  return model_->head(hidden);  // [B, V]
}

torch::Tensor Decoder::feed_together(const std::vector<Decoder*>& ds, const torch::Tensor& ids_in) {
  c10::InferenceMode inference;
  TORCH_CHECK(!ds.empty(), "Decoder::feed_together: no decoder");
  auto& model = ds[0]->model_;
  int64_t rows = 0;
  for (const auto* d : ds) {
    TORCH_CHECK(d->model_.get() == model.get(), "Decoder::feed_together: the decoders read different models");
    rows += d->batch_;
  }
  TORCH_CHECK(ids_in.numel() == rows, "Decoder::feed_together: ", ids_in.numel(), " ids for ", rows, " rows");
  const auto ids = ids_in.reshape({rows, 1}).to(model->embed_out->weight.device());
  if (model->gpt_neox || ds.size() == 1) {  // nothing to stack
    std::vector<torch::Tensor> logits;
    for (size_t j = 0, first = 0; j < ds.size(); first += ds[j]->batch_, ++j)
      logits.push_back(ds[j]->feed(ids.narrow(0, static_cast<int64_t>(first), ds[j]->batch_)));
    return torch::cat(logits);
  }
  const int64_t W = model->config().window_size;
  auto& net = model->model;
  std::vector<OpenWindow*> windows;
  for (auto* d : ds) {
    if (!d->window_) d->open_window();  // the stream's next window: its own prefix rows first
    windows.push_back(&*d->window_);
  }
  const auto hidden = select_rows(net->extend(windows, net->embed_in(ids)), 1, 0);  // [rows, D]
  for (auto* d : ds)
    if (++d->in_window_ == W) d->close_window();
  return model->head(hidden);  // [rows, V]
}

}  // namespace bakallm
