#include "data/tokenize_job.h"

#include <cmath>
#include <filesystem>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/shard_writer.h"
#include "data/tokenizer.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

constexpr size_t kBatchBytes = 4u << 20;  // text encoded per parallel batch

std::vector<std::vector<uint32_t>> encode_parallel(const Tokenizer& tok, const std::vector<std::string>& docs,
                                                   int threads) {
  std::vector<std::vector<uint32_t>> out(docs.size());
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(docs.size())));
  std::vector<std::thread> workers;
  std::exception_ptr failure;
  std::mutex failure_mutex;
  for (int w = 0; w < n; ++w) {
    workers.emplace_back([&, w] {
      try {
        for (size_t i = w; i < docs.size(); i += n) {
          out[i] = tok.encode_document(docs[i]);
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        failure = std::current_exception();
      }
    });
  }
  for (auto& t : workers) t.join();
  if (failure) std::rethrow_exception(failure);
  return out;
}

// What a dataset directory holds: the manifest, the tokenizer, the shards
// (and their temporaries while being written).
bool is_dataset_file(const std::string& name, bool is_dir) {
  if (is_dir) return false;
  if (name.rfind("manifest.json", 0) == 0 || name.rfind("tokenizer.", 0) == 0) return true;
  return (name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0) && name.find(".bin") != std::string::npos;
}

}  // namespace

bool is_validation_document(int64_t i, double fraction) {
  return fraction > 0 && std::floor((i + 1) * fraction) > std::floor(i * fraction);
}

namespace {
// Tokenizes every input into shards, the tokenizer and the manifest in DIR.
TokenizeTotals write_dataset(const TokenizeOptions& o, const Tokenizer& tok, int64_t total_bytes,
                             const std::string& dir);
}  // namespace

TokenizeTotals tokenize_corpus(const TokenizeOptions& o) {
  if (o.inputs.empty()) throw Error("tokenize: no input files");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1)) throw Error("tokenize: --val-fraction must be in [0, 1)");
  if (o.shard_tokens <= 0) throw Error("tokenize: --shard-tokens must be positive");
  int64_t total_bytes = 0;
  for (const auto& f : o.inputs) {
    if (!fs::is_regular_file(f)) throw file_error(f, "input not found");
    total_bytes += static_cast<int64_t>(fs::file_size(f));
  }
  Tokenizer tok(o.tokenizer);
  // The new dataset is built beside the old one (OUT.tmp.PID) and swapped in
  // only when complete; OUT may hold an earlier dataset, nothing else.
  const std::string out_dir = clean_dir(o.out_dir);
  require_only_own_files(out_dir, is_dataset_file, "tokenize", "choose another --out (nothing was changed)");
  const fs::path parent = fs::absolute(out_dir).parent_path();
  remove_orphans(parent.string(), fs::path(out_dir).filename().string());
  TokenizeTotals totals;
  write_dir_atomically(out_dir, [&](const std::string& staging) { totals = write_dataset(o, tok, total_bytes, staging); });
  for (auto* shards : {&totals.train_shards, &totals.val_shards})
    for (auto& path : *shards) path = (fs::path(out_dir) / fs::path(path).filename()).string();
  return totals;
}

namespace {

TokenizeTotals write_dataset(const TokenizeOptions& o, const Tokenizer& tok, int64_t total_bytes,
                             const std::string& dir) {

  TokenizeTotals totals;
  ShardWriter train(dir, "train", o.shard_tokens), val(dir, "val", o.shard_tokens);
  ProgressBar bar(static_cast<double>(total_bytes), o.progress);
  int64_t bytes_done = 0, text_bytes = 0;
  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  auto status = [&] {
    return ProgressBar::bytes(static_cast<double>(text_bytes)) + " text, " +
           ProgressBar::count(static_cast<double>(totals.documents)) + " docs, " +
           ProgressBar::count(static_cast<double>(train.tokens() + val.tokens())) + " tokens, " +
           ProgressBar::count((train.tokens() + val.tokens()) / std::max(bar.elapsed(), 1e-9)) + " tok/s";
  };
  auto process = [&] {
    for (auto& ids : encode_parallel(tok, batch, o.threads)) {
      if (is_validation_document(totals.documents, o.val_fraction)) {
        val.add(ids);
        ++totals.val_documents;
      } else {
        train.add(ids);
      }
      ++totals.documents;
    }
    batch.clear();
    batch_bytes = 0;
    bar.update(static_cast<double>(bytes_done), status());
  };
  for (const auto& f : o.inputs) {
    read_corpus(f, o.corpus, [&](std::string&& doc) {
      text_bytes += static_cast<int64_t>(doc.size());
      batch_bytes += doc.size();
      batch.push_back(std::move(doc));
      if (batch_bytes >= kBatchBytes) process();
    });
    process();
    bytes_done += static_cast<int64_t>(fs::file_size(f));
    ++totals.files;
  }
  if (totals.documents == 0) throw Error("tokenize: the inputs hold no documents (empty or whitespace only)");
  train.finish();
  val.finish();
  bar.update(static_cast<double>(bytes_done), status(), true);
  bar.finish();

  totals.bytes = text_bytes;
  totals.train_tokens = train.tokens();
  totals.val_tokens = val.tokens();
  totals.train_shards = train.shards();
  totals.val_shards = val.shards();
  totals.seconds = bar.elapsed();
  const std::string tok_copy = dir + "/" + tokenizer_file_name(o.tokenizer);
  fs::copy_file(o.tokenizer, tok_copy);
  fs::permissions(tok_copy, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  auto names = [](const std::vector<std::string>& paths) {
    std::vector<std::string> out;
    for (const auto& p : paths) out.push_back(fs::path(p).filename().string());
    return out;
  };
  nlohmann::json manifest = {{"tokenizer", tokenizer_file_name(o.tokenizer)},
                             {"vocab_size", tok.vocab_size()},
                             {"bos_id", tok.bos_id()},
                             {"inputs", o.inputs},
                             {"documents", totals.documents},
                             {"val_documents", totals.val_documents},
                             {"train_tokens", totals.train_tokens},
                             {"val_tokens", totals.val_tokens},
                             {"train_shards", names(totals.train_shards)},
                             {"val_shards", names(totals.val_shards)}};
  write_file_atomically(dir + "/manifest.json", [&](std::ostream& out) { out << manifest.dump(2) << "\n"; });
  return totals;
}

}  // namespace

}  // namespace bakallm
