#include "experiment/plan.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "util/error.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

using ordered = nlohmann::ordered_json;

// An object's keys must all be in KNOWN.
void require_known(const ordered& j, const std::set<std::string>& known, const std::string& where) {
  if (!j.is_object()) throw Error(where + " must be a JSON object");
  for (const auto& item : j.items())
    if (!known.count(item.key())) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw Error(where + ": unknown field '" + item.key() + "' (known: " + list + ")");
    }
}

int64_t positive_int(const ordered& v, const std::string& where) {
  if (!v.is_number_integer() || v.get<int64_t>() <= 0) throw Error(where + " must be a positive integer");
  return v.get<int64_t>();
}

double positive_real(const ordered& v, const std::string& where) {
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
    throw Error(where + " must be a positive number");
  return v.get<double>();
}

std::string text(const ordered& v, const std::string& where) {
  if (!v.is_string() || v.get<std::string>().empty()) throw Error(where + " must be a non-empty string");
  return v.get<std::string>();
}

// The training options a plan may set, by their `bakallm train` names.
void read_train(const ordered& j, TrainOptions& o, const std::string& where) {
  require_known(j, {"batch", "windows_per_step", "grad_accum", "lr", "min_lr_ratio", "warmup", "weight_decay", "clip",
                    "dtype", "packing", "eval_every", "eval_tokens", "checkpoint_every"},
                where);
  for (const auto& item : j.items()) {
    const auto& k = item.key();
    const auto& v = item.value();
    const std::string w = where + "." + k;
    if (k == "batch") o.batch_rows = positive_int(v, w);
    else if (k == "windows_per_step") o.windows_per_step = positive_int(v, w);
    else if (k == "grad_accum") o.grad_accum = positive_int(v, w);
    else if (k == "lr") o.optimizer.lr = positive_real(v, w);
    else if (k == "min_lr_ratio") o.min_lr_ratio = positive_real(v, w);
    else if (k == "warmup") o.warmup = v.is_number_integer() && v.get<int64_t>() >= 0 ? v.get<int64_t>() : throw Error(w + " must be an integer >= 0");
    else if (k == "weight_decay") o.optimizer.weight_decay = v.is_number() && v.get<double>() >= 0 ? v.get<double>() : throw Error(w + " must be >= 0");
    else if (k == "clip") o.clip = positive_real(v, w);
    else if (k == "eval_every") o.eval_every = positive_int(v, w);
    else if (k == "eval_tokens") o.eval_tokens = positive_int(v, w);
    else if (k == "checkpoint_every") o.checkpoint_every = positive_int(v, w);
    else if (k == "dtype") {
      o.dtype = text(v, w);
      if (o.dtype != "float32" && o.dtype != "bfloat16" && o.dtype != "auto")
        throw Error(w + " must be auto, float32 or bfloat16");
    } else if (k == "packing") {
      o.packing = text(v, w);
      if (o.packing != "documents" && o.packing != "stream") throw Error(w + " must be documents or stream");
    }
  }
}

EvalSpec read_eval(const ordered& j, const std::string& where, const fs::path& base) {
  require_known(j, {"name", "texts", "protocol", "ctx", "max_tokens", "bos", "separator", "field"}, where);
  EvalSpec e;
  if (!j.contains("name") || !j.contains("texts")) throw Error(where + " needs \"name\" and \"texts\"");
  e.name = text(j.at("name"), where + ".name");
  const auto& texts = j.at("texts");
  if (!texts.is_array() || texts.empty()) throw Error(where + ".texts must be a non-empty list of files");
  for (const auto& t : texts) {
    auto p = (base / text(t, where + ".texts")).lexically_normal().string();
    if (!fs::is_regular_file(p)) throw file_error(p, "no such evaluation text (" + where + ".texts)");
    e.texts.push_back(p);
  }
  try {
    if (j.contains("protocol")) e.protocol = text(j.at("protocol"), where + ".protocol");
    e.options.protocol = parse_protocol(e.protocol);
    if (j.contains("bos")) e.bos = parse_bos(text(j.at("bos"), where + ".bos"));
    if (j.contains("separator")) e.corpus.separator = parse_separator(text(j.at("separator"), where + ".separator"));
  } catch (const Error& err) {
    throw Error(where + ": " + err.what());
  }
  if (j.contains("field")) e.corpus.jsonl_field = text(j.at("field"), where + ".field");
  if (j.contains("ctx")) e.options.context = positive_int(j.at("ctx"), where + ".ctx");
  if (e.options.protocol == EvalProtocol::kAuthor && e.options.context == 0) e.options.context = kAuthorContext;
  if (e.options.protocol != EvalProtocol::kStream && e.options.context < 2)
    throw Error(where + ": protocol " + e.protocol + " needs ctx >= 2");
  if (j.contains("max_tokens")) e.options.max_tokens = positive_int(j.at("max_tokens"), where + ".max_tokens");
  return e;
}

}  // namespace

std::string Plan::budget_text() const {
  if (budget_tokens > 0) return std::to_string(budget_tokens) + " tokens";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g minutes", budget_minutes);
  return buf;
}

Plan load_plan(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw file_error(path, "cannot open plan");
  ordered j;
  try {
    j = ordered::parse(in);
  } catch (const ordered::exception& e) {
    throw file_error(path, std::string("invalid JSON: ") + e.what());
  }
  require_known(j, {"data", "budget", "seeds", "train", "eval", "base", "variants"}, path);
  for (const char* required : {"data", "budget", "seeds", "base", "variants"})
    if (!j.contains(required)) throw Error(path + ": missing field '" + required + "'");
  Plan plan;
  plan.path = path;
  const fs::path base_dir = fs::path(path).parent_path();

  // Data: a `bakallm tokenize` directory, and its tokenizer.
  plan.data_dir = (base_dir / text(j.at("data"), path + ": data")).lexically_normal().string();
  const std::string manifest_path = plan.data_dir + "/manifest.json";
  if (!fs::is_regular_file(manifest_path))
    throw file_error(plan.data_dir, "no manifest.json: not a `bakallm tokenize` directory (" + path + ": data)");
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(std::ifstream(manifest_path));
  } catch (const nlohmann::json::exception& e) {
    throw file_error(manifest_path, std::string("invalid JSON: ") + e.what());
  }
  const int64_t data_vocab = manifest.value("vocab_size", int64_t{0});
  if (manifest.contains("tokenizer")) plan.tokenizer = plan.data_dir + "/" + manifest.at("tokenizer").get<std::string>();

  // Budget.
  const auto& budget = j.at("budget");
  require_known(budget, {"tokens", "minutes", "steps"}, path + ": budget");
  if (budget.contains("tokens") == budget.contains("minutes"))
    throw Error(path + ": budget needs exactly one of \"tokens\" or \"minutes\"");
  if (budget.contains("tokens")) {
    plan.budget_tokens = positive_int(budget.at("tokens"), path + ": budget.tokens");
    if (budget.contains("steps")) throw Error(path + ": budget.steps goes with minutes (the schedule's length)");
  } else {
    plan.budget_minutes = positive_real(budget.at("minutes"), path + ": budget.minutes");
    if (!budget.contains("steps"))
      throw Error(path + ": budget.minutes needs budget.steps (the learning-rate schedule's length)");
    plan.train.steps = positive_int(budget.at("steps"), path + ": budget.steps");
  }

  // Seeds.
  const auto& seeds = j.at("seeds");
  if (!seeds.is_array() || seeds.empty()) throw Error(path + ": seeds must be a non-empty list of integers");
  std::set<uint64_t> seen_seeds;
  for (const auto& s : seeds) {
    if (!s.is_number_integer() || s.get<int64_t>() < 0) throw Error(path + ": seeds must be integers >= 0");
    if (!seen_seeds.insert(s.get<uint64_t>()).second) throw Error(path + ": seed " + s.dump() + " is listed twice");
    plan.seeds.push_back(s.get<uint64_t>());
  }

  // Training options shared by every run.
  plan.train.data_dir = plan.data_dir;
  plan.train.sample_tokens = 0;
  plan.train.progress = false;
  plan.train.keep_checkpoints = 1;
  if (j.contains("train")) read_train(j.at("train"), plan.train, path + ": train");

  // Evaluations.
  if (j.contains("eval")) {
    if (!j.at("eval").is_array()) throw Error(path + ": eval must be a list");
    std::set<std::string> names;
    for (size_t i = 0; i < j.at("eval").size(); ++i) {
      plan.evals.push_back(read_eval(j.at("eval")[i], path + ": eval[" + std::to_string(i) + "]", base_dir));
      if (!names.insert(plan.evals.back().name).second)
        throw Error(path + ": eval name '" + plan.evals.back().name + "' is used twice");
    }
    if (plan.tokenizer.empty() || !fs::is_regular_file(plan.tokenizer))
      throw file_error(plan.data_dir, "has no tokenizer, needed to read the evaluation texts");
  }

  // The base config and its variants.
  ordered base;
  const auto& b = j.at("base");
  if (b.is_string()) base = ordered::parse(config_to_json(preset(b.get<std::string>())).dump());
  else if (b.is_object()) base = b;
  else throw Error(path + ": base must be a preset name or a config object");
  const auto& variants = j.at("variants");
  if (!variants.is_object() || variants.empty())
    throw Error(path + ": variants must be an object of name -> config overrides");
  for (const auto& item : variants.items()) {
    const std::string name = item.key();
    const std::string where = path + ": variant '" + name + "'";
    if (name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != std::string::npos ||
        name[0] == '.')
      throw Error(where + ": a name may hold only letters, digits, '_', '-' and '.'");
    const auto& over = item.value();
    if (!over.is_object()) throw Error(where + " must be an object of config fields");
    ordered merged;
    const auto base_type = base.value("model_type", std::string("bakallm"));
    if (over.contains("model_type") && over.at("model_type") != base_type) {
      merged = over;  // another kind of model: its own config, with the base's data-facing sizes by default
      if (!merged.contains("vocab_size")) merged["vocab_size"] = base.at("vocab_size");
      if (!merged.contains("window_size") && base.contains("window_size")) merged["window_size"] = base.at("window_size");
    } else {
      merged = base;
      for (const auto& o : over.items()) merged[o.key()] = o.value();
    }
    Variant v;
    v.name = name;
    v.config = config_from_json(nlohmann::json::parse(merged.dump()), where);
    if (data_vocab > v.config.vocab_size)
      throw Error(where + ": vocab_size " + std::to_string(v.config.vocab_size) + " is smaller than the data's " +
                  std::to_string(data_vocab) + " (" + manifest_path + ")");
    const int64_t k = plan.train.windows_per_step > 0 ? plan.train.windows_per_step
                                                       : std::max<int64_t>(1, v.config.detach_every);
    const int64_t per_step = plan.train.batch_rows * plan.train.grad_accum * k * v.config.window_size;
    v.steps = plan.budget_tokens > 0 ? (plan.budget_tokens + per_step - 1) / per_step : plan.train.steps;
    plan.variants.push_back(v);
  }

  plan.comparable = {{"data", plan.data_dir},
                     {"budget", nlohmann::json::parse(budget.dump())},
                     {"train", j.contains("train") ? nlohmann::json::parse(j.at("train").dump()) : nlohmann::json::object()},
                     {"eval", j.contains("eval") ? nlohmann::json::parse(j.at("eval").dump()) : nlohmann::json::array()}};
  return plan;
}

}  // namespace bakallm
