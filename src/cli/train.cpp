// bakallm train (--model DIR | --preset P | --config F) --data DIR --out RUN [options]
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "train/trainer.h"
#include "util/error.h"

namespace bakallm::cli {

void add_train(CLI::App& app) {
  struct Args {
    TrainOptions o;
    std::string preset, config;
    CommOptions comm;  // a rank of a data-parallel job when torchrun's variables say so
  };
  auto args = std::make_shared<Args>();
  auto& o = args->o;
  auto* cmd = app.add_subcommand("train", "Train a model on tokenized data (Ctrl-C checkpoints and stops; --resume continues)");
  auto* m = cmd->add_option("--model", o.init_model, "model directory to start from");
  auto* p = cmd->add_option("--preset", args->preset, "start fresh from a preset (tiny, base)");
  auto* c = cmd->add_option("--config", args->config, "start fresh from a config.json")->check(CLI::ExistingFile);
  m->excludes(p)->excludes(c);
  p->excludes(c);
  cmd->add_option("--data", o.data_dir, "directory written by `bakallm tokenize`")->required();
  cmd->add_option("--out", o.run_dir, "run directory (metrics, plots, checkpoints)")->required();
  cmd->add_flag("--resume", o.resume, "continue from the run directory's newest checkpoint");
  cmd->add_option("--steps", o.steps, "optimizer steps in all")->check(kPositive);
  cmd->add_option("--batch", o.batch_rows, "rows per batch (each reads its own document)")->check(kPositive);
  cmd->add_option("--windows-per-step", o.windows_per_step, "windows per row per step (default: detach_every)");
  cmd->add_option("--packing", o.packing,
                  "documents (each starts a window, fresh state; the author's) or stream (back to back, no padding)")
      ->check(CLI::IsMember({"documents", "stream"}));
  cmd->add_option("--grad-accum", o.grad_accum, "micro-batches per step")->check(kPositive);
  cmd->add_option("--lr", o.optimizer.lr, "peak learning rate");
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "final learning rate as a share of the peak");
  cmd->add_option("--warmup", o.warmup, "warmup steps");
  cmd->add_option("--weight-decay", o.optimizer.weight_decay, "AdamW decoupled weight decay");
  cmd->add_option("--clip", o.clip, "gradient norm clip");
  o.dtype = "auto";
  cmd->add_option("--dtype", o.dtype,
                  "auto (the faster here: bfloat16 on AMX), float32, or bfloat16 (products in bf16, float32 master weights)")
      ->check(CLI::IsMember({"auto", "float32", "bfloat16"}));
  cmd->add_option("--seed", o.seed, "seed for init, data order and dropout");
  cmd->add_option("--eval-every", o.eval_every, "validation every N steps (0: only at the end)");
  cmd->add_option("--eval-tokens", o.eval_tokens, "validation tokens per evaluation");
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "checkpoint (and sample) every N steps");
  cmd->add_option("--keep", o.keep_checkpoints, "checkpoints kept")->check(kPositive);
  cmd->add_option("--prompt", o.prompt, "prompt of the sample at each checkpoint");
  cmd->add_option("--sample-tokens", o.sample_tokens, "tokens sampled at each checkpoint (0: none)");
  cmd->add_option("--max-minutes", o.max_minutes, "stop with a checkpoint after this long");
  add_dist_timeout(cmd, args->comm);
  cmd->callback([args] {
    auto& o = args->o;
    if (o.init_model.empty()) {
      if (!args->config.empty()) o.config = load_config(args->config);
      else if (!args->preset.empty()) o.config = preset(args->preset);
      else throw Error("train: give --model DIR, --preset NAME or --config FILE");
    }
    const auto comm = Communicator::from_environment(args->comm);
    o.comm = comm.get();
    const auto r = train(o);
    if (comm && comm->rank() != 0) return;  // rank 0 speaks for the job
    std::printf("%s at step %lld: train loss %.4f (first %.4f), validation loss %s\ncheckpoint %s\n",
                r.interrupted ? "stopped" : "finished", (long long)r.steps, r.last_loss, r.first_loss,
                r.val_loss > 0 ? std::to_string(r.val_loss).c_str() : "n/a", r.last_checkpoint.c_str());
    if (!r.sample.empty()) std::printf("sample: %s\n", r.sample.c_str());
  });
}

}  // namespace bakallm::cli
