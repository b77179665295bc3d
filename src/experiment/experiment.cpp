#include "experiment/experiment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <sstream>

#include "eval/results_db.h"
#include "io/model_dir.h"
#include "model/flops.h"
#include "train/checkpoint.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/plot.h"
#include "util/sqlite.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

constexpr const char* kExperimentSchema = R"(
CREATE TABLE IF NOT EXISTS experiment (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  variant TEXT NOT NULL, seed INTEGER NOT NULL, position INTEGER NOT NULL, budget TEXT NOT NULL,
  config_json TEXT NOT NULL, params INTEGER NOT NULL, steps INTEGER NOT NULL, tokens INTEGER NOT NULL,
  seconds REAL NOT NULL, tok_per_s REAL NOT NULL, train_loss REAL NOT NULL, val_loss REAL NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  PRIMARY KEY (variant, seed));
CREATE TABLE IF NOT EXISTS evals (
  variant TEXT NOT NULL, seed INTEGER NOT NULL, eval TEXT NOT NULL, protocol TEXT NOT NULL,
  context INTEGER NOT NULL, loss REAL NOT NULL, tokens INTEGER NOT NULL,
  PRIMARY KEY (variant, seed, eval));
CREATE TABLE IF NOT EXISTS curves (
  variant TEXT NOT NULL, seed INTEGER NOT NULL, step INTEGER NOT NULL, tokens INTEGER NOT NULL,
  val_loss REAL NOT NULL, PRIMARY KEY (variant, seed, step));
)";

std::string db_path(const std::string& out) { return out + "/results.sqlite3"; }

bool is_experiment_file(const std::string& name, bool is_dir) {
  if (is_dir) return name == "runs";
  return name == "results.sqlite3" || name == "results.sqlite3-wal" || name == "results.sqlite3-shm" ||
         name == "results.sqlite3-journal" || name == "report.md" || name == "curves.png" || is_temporary_name(name);
}

// The plan's comparable part must match what OUT was made with; a finished
// variant's config must match its recorded one.
void check_same_plan(const SqliteDb& db, const Plan& plan) {
  SqliteStatement q(db, "SELECT value FROM experiment WHERE key = 'plan'");
  const std::string now = plan.comparable.dump();
  if (q.row()) {
    if (q.column_text(0) != now)
      throw file_error(db.path(),
                       "was made by a plan with other data, budget, training options or evaluations (" +
                           q.column_text(0) + "); give this plan another --out");
  } else {
    SqliteStatement(db, "INSERT INTO experiment (key, value) VALUES ('plan', ?)").text(now).run();
  }
  for (const auto& v : plan.variants) {
    SqliteStatement r(db, "SELECT config_json FROM runs WHERE variant = ? LIMIT 1");
    r.text(v.name);
    if (r.row() && r.column_text(0) != config_to_json(v.config).dump())
      throw file_error(db.path(), "variant '" + v.name + "' was trained with another config (" + r.column_text(0) +
                                      "); rename the variant or give another --out");
  }
}

bool is_done(const SqliteDb& db, const std::string& variant, uint64_t seed) {
  SqliteStatement q(db, "SELECT 1 FROM runs WHERE variant = ? AND seed = ?");
  q.text(variant).integer(static_cast<int64_t>(seed));
  return q.row();
}

struct RunMetrics {
  std::vector<std::array<double, 3>> curve;  // step, tokens, val_loss
  double median_tok_per_s = 0;
  double last_val_loss = NAN;
};

RunMetrics read_metrics(const std::string& run_dir) {
  RunMetrics m;
  std::vector<double> rates;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // a line cut by a kill
    }
    if (j.contains("tok_per_s")) rates.push_back(j["tok_per_s"].get<double>());
    if (j.contains("val_loss")) {
      m.curve.push_back({j["step"].get<double>(), j.value("tokens", 0.0), j["val_loss"].get<double>()});
      m.last_val_loss = j["val_loss"].get<double>();
    }
  }
  if (!rates.empty()) {
    std::nth_element(rates.begin(), rates.begin() + rates.size() / 2, rates.end());
    m.median_tok_per_s = rates[rates.size() / 2];
  }
  return m;
}

}  // namespace

bool run_experiment(const Plan& plan, const std::string& out_in, std::ostream& log) {
  const std::string out = clean_dir(out_in);
  require_only_own_files(out, is_experiment_file, "bakallm experiment", "give an empty or new --out");
  fs::create_directories(out + "/runs");
  remove_orphans(out);
  SqliteDb db(db_path(out), true);
  db.transaction([&] {
    db.exec(kExperimentSchema);
    check_same_plan(db, plan);
  });
  std::unique_ptr<Tokenizer> tokenizer;
  if (!plan.evals.empty()) tokenizer = std::make_unique<Tokenizer>(plan.tokenizer);

  const size_t total = plan.variants.size() * plan.seeds.size();
  size_t index = 0;
  for (size_t position = 0; position < plan.variants.size(); ++position) {
    const auto& v = plan.variants[position];
    for (const uint64_t seed : plan.seeds) {
      ++index;
      const std::string tag = v.name + " seed " + std::to_string(seed);
      if (is_done(db, v.name, seed)) {
        log << "[" << index << "/" << total << "] " << tag << ": recorded, skipped\n";
        continue;
      }
      TrainOptions o = plan.train;
      o.config = v.config;
      o.seed = seed;
      o.steps = v.steps;
      o.max_minutes = plan.budget_minutes;
      o.minutes_span_resumes = true;  // a resumed run gets what is left of its minutes, not a new budget
      o.run_dir = out + "/runs/" + v.name + "/seed" + std::to_string(seed);
      o.resume = fs::exists(o.run_dir);  // killed before: continue from its checkpoint
      if (o.checkpoint_every > o.steps) o.checkpoint_every = o.steps;
      log << "[" << index << "/" << total << "] " << tag << ": " << (o.resume ? "resuming" : "training") << " "
          << v.steps << " steps (" << plan.budget_text() << ")" << std::endl;
      fs::create_directories(fs::path(o.run_dir).parent_path());
      const TrainResult r = train(o);
      if (r.interrupted && stop_requested()) {
        log << tag << ": stopped; run the same command again to continue\n";
        return false;
      }
      auto loaded = load_model_dir(r.last_checkpoint);
      const auto params = parameter_groups(loaded.model).back().second;
      const auto metrics = read_metrics(o.run_dir);
      std::vector<std::pair<const EvalSpec*, EvalStats>> evals;
      for (const auto& e : plan.evals) {
        evals.emplace_back(&e, evaluate_texts(loaded.model, *tokenizer, e.texts, e.corpus, e.options, {}, e.bos));
        if (evals.back().second.tokens == 0) throw file_error(e.texts[0], "no token to score");
      }
      db.transaction([&] {
        SqliteStatement(db,
                        "INSERT OR REPLACE INTO runs (variant, seed, position, budget, config_json, params, steps,"
                        " tokens, seconds, tok_per_s, train_loss, val_loss) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
            .text(v.name).integer(static_cast<int64_t>(seed)).integer(static_cast<int64_t>(position))
            .text(plan.budget_text()).text(config_to_json(v.config).dump()).integer(params).integer(r.steps)
            .integer(r.tokens).real(r.seconds).real(metrics.median_tok_per_s).real(r.last_loss)
            .real(metrics.last_val_loss)
            .run();
        for (const auto& c : metrics.curve)
          SqliteStatement(db, "INSERT OR REPLACE INTO curves (variant, seed, step, tokens, val_loss) VALUES (?,?,?,?,?)")
              .text(v.name).integer(static_cast<int64_t>(seed)).integer(static_cast<int64_t>(c[0]))
              .integer(static_cast<int64_t>(c[1])).real(c[2])
              .run();
        for (const auto& [e, s] : evals)
          SqliteStatement(db, "INSERT OR REPLACE INTO evals (variant, seed, eval, protocol, context, loss, tokens)"
                              " VALUES (?,?,?,?,?,?,?)")
              .text(v.name).integer(static_cast<int64_t>(seed)).text(e->name).text(e->protocol)
              .integer(e->options.context).real(s.loss()).integer(s.tokens)
              .run();
        for (const auto& [e, s] : evals)  // the author's table too, for `bakallm results`
          insert_result(db, evaluation_row(r.last_checkpoint, loaded.model, s, e->protocol, e->options.context,
                                           e->texts[0], e->name));
      });
      log << "[" << index << "/" << total << "] " << tag << ": val loss " << metrics.last_val_loss;
      for (const auto& [e, s] : evals) log << ", " << e->name << " " << s.loss();
      log << " (" << static_cast<int64_t>(r.seconds) << " s)" << std::endl;
    }
  }
  log << report_experiment(out);
  return true;
}

namespace {

struct Summary {
  double mean = NAN, std = NAN;
  size_t n = 0;
};

Summary summarize(const std::vector<double>& xs) {
  Summary s;
  s.n = xs.size();
  if (xs.empty()) return s;
  double sum = 0;
  for (double x : xs) sum += x;
  s.mean = sum / static_cast<double>(xs.size());
  if (xs.size() > 1) {
    double sq = 0;
    for (double x : xs) sq += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(sq / static_cast<double>(xs.size() - 1));  // sample standard deviation
  }
  return s;
}

std::string fmt(const char* f, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}

std::string mean_std(const Summary& s) {
  if (s.n == 0) return "-";
  return fmt("%.4f", s.mean) + (s.n > 1 ? " ± " + fmt("%.4f", s.std) : "");
}

// The difference of two means, and whether it exceeds twice its seed noise:
// the standard error sqrt(s_a²/n_a + s_b²/n_b).
std::string difference(const Summary& a, const Summary& ref) {
  if (a.n == 0 || ref.n == 0) return "-";
  const double d = a.mean - ref.mean;
  std::string out = fmt("%+.4f", d);
  if (a.n > 1 && ref.n > 1) {
    const double se = std::sqrt(a.std * a.std / double(a.n) + ref.std * ref.std / double(ref.n));
    out += std::fabs(d) > 2 * se ? " (> 2σ)" : " (noise)";
  }
  return out;
}

}  // namespace

std::string report_experiment(const std::string& out_in) {
  const std::string out = clean_dir(out_in);
  SqliteDb db(db_path(out), false);
  struct Row {
    std::string variant;
    int64_t params = 0;
    std::vector<double> val, seconds, rate;
    std::map<std::string, std::vector<double>> evals;
    std::string budget;
  };
  std::vector<Row> rows;
  std::vector<std::string> eval_names;
  {
    SqliteStatement q(db, "SELECT variant, params, val_loss, seconds, tok_per_s, budget FROM runs ORDER BY position, seed");
    while (q.row()) {
      if (rows.empty() || rows.back().variant != q.column_text(0)) {
        rows.emplace_back();
        rows.back().variant = q.column_text(0);
      }
      auto& r = rows.back();
      r.params = q.column_int(1);
      r.val.push_back(q.column_real(2));
      r.seconds.push_back(q.column_real(3));
      r.rate.push_back(q.column_real(4));
      r.budget = q.column_text(5);
    }
  }
  if (rows.empty()) throw file_error(db_path(out), "no finished run to report");
  {
    SqliteStatement q(db, "SELECT variant, eval, loss, protocol, context FROM evals ORDER BY rowid");
    while (q.row()) {
      const auto name = q.column_text(1) + " (" + q.column_text(3) +
                        (q.column_int(4) ? " ctx " + std::to_string(q.column_int(4)) : std::string()) + ")";
      if (std::find(eval_names.begin(), eval_names.end(), name) == eval_names.end()) eval_names.push_back(name);
      for (auto& r : rows)
        if (r.variant == q.column_text(0)) r.evals[name].push_back(q.column_real(2));
    }
  }

  std::ostringstream md;
  md << "Budget " << rows[0].budget << " per run; mean ± sample std over seeds; Δ is against `" << rows[0].variant
     << "`, marked (> 2σ) when it exceeds twice its seed noise sqrt(s²/n + s_ref²/n_ref).\n\n";
  md << "| variant | seeds | params | validation loss | Δ val";
  for (const auto& e : eval_names) md << " | " << e << " | Δ";
  md << " | tokens/s | wall s |\n|---|---|---|---|---";
  for (size_t i = 0; i < eval_names.size(); ++i) md << "|---|---";
  md << "|---|---|\n";
  const Summary ref_val = summarize(rows[0].val);
  std::vector<double> all_std;
  for (const auto& r : rows) {
    const auto val = summarize(r.val);
    if (val.n > 1) all_std.push_back(val.std);
    md << "| " << r.variant << " | " << val.n << " | " << fmt("%.2fM", double(r.params) / 1e6) << " | " << mean_std(val)
       << " | " << (&r == &rows[0] ? "" : difference(val, ref_val));
    for (const auto& e : eval_names) {
      auto it = r.evals.find(e);
      const auto s = it == r.evals.end() ? Summary{} : summarize(it->second);
      auto ref_it = rows[0].evals.find(e);
      const auto ref = ref_it == rows[0].evals.end() ? Summary{} : summarize(ref_it->second);
      md << " | " << mean_std(s) << " | " << (&r == &rows[0] ? "" : difference(s, ref));
    }
    md << " | " << fmt("%.0f", summarize(r.rate).mean) << " | " << fmt("%.0f", summarize(r.seconds).mean) << " |\n";
  }
  if (!all_std.empty()) {
    double sq = 0;
    for (double s : all_std) sq += s * s;
    md << "\nSeed noise (pooled std of the validation loss over variants): "
       << fmt("%.4f", std::sqrt(sq / double(all_std.size()))) << "\n";
  }
  const std::string report = md.str();
  write_file_atomically(out + "/report.md", [&](std::ostream& f) { f << report; });

  // Every variant's validation curve: the mean over its seeds at each step.
  std::ostringstream plot;
  plot << "set termoption noenhanced\nset title 'validation loss'\nset xlabel 'training tokens'\nset ylabel 'loss (nats/token)'\nset grid\n"
          "set key outside right\n";
  std::string plot_cmd;
  for (size_t i = 0; i < rows.size(); ++i) {
    SqliteStatement q(db, "SELECT tokens, AVG(val_loss) FROM curves WHERE variant = ? GROUP BY step ORDER BY step");
    q.text(rows[i].variant);
    plot << "$v" << i << " << EOD\n";
    while (q.row()) plot << q.column_int(0) << " " << q.column_real(1) << "\n";
    plot << "EOD\n";
    plot_cmd += std::string(plot_cmd.empty() ? "plot " : ", ") + "$v" + std::to_string(i) +
                " using 1:2 with linespoints lw 2 title '" + rows[i].variant + "'";
  }
  plot << plot_cmd << "\n";
  const auto why = render_png(plot.str(), out + "/curves.png", 1100, 600);
  return report + (why.empty() ? "" : "note: no curves.png: " + why + "\n");
}

}  // namespace bakallm
