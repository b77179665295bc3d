#include "data/tokenizer.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include <filesystem>

#include "data/bpe.h"
#include "data/spm/spm_shim.h"
#include "util/error.h"
#include "util/strings.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

// Runs ARGS[0] (found on PATH) with stdout and stderr into LOG; returns its exit status.
int run_process(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw Error(std::string("cannot run ") + args[0] + " (Debian package 'sentencepiece'): " + std::strerror(rc));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The shim's entry points, resolved once per process.
struct SpmApi {
  decltype(&bakallm_spm_load) load;
  decltype(&bakallm_spm_free) free;
  decltype(&bakallm_spm_encode) encode;
  decltype(&bakallm_spm_decode) decode;
  decltype(&bakallm_spm_free_buffer) free_buffer;
  decltype(&bakallm_spm_piece_size) piece_size;
  decltype(&bakallm_spm_bos_id) bos_id;
  decltype(&bakallm_spm_eos_id) eos_id;
  decltype(&bakallm_spm_piece_kind) piece_kind;
  decltype(&bakallm_spm_id_to_piece) id_to_piece;
};

std::vector<std::string> shim_candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("BAKALLM_SPM_SHIM")) paths.push_back(env);
  std::error_code ec;
  const auto exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  if (!ec) {
    paths.push_back((exe_dir / "libbakallm_spm.so").string());
    paths.push_back((exe_dir / "../lib/libbakallm_spm.so").string());
  }
  paths.push_back(BAKALLM_SPM_SHIM_PATH);
  return paths;
}

template <typename F>
void resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(::dlsym(lib, name));
  if (!fn) throw Error(std::string("libbakallm_spm.so lacks ") + name);
}

const SpmApi& api() {
  static const SpmApi instance = [] {
    void* lib = nullptr;
    std::string tried;
    for (const auto& p : shim_candidates()) {
      if (!fs::exists(p)) continue;
      lib = ::dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (lib) break;
      tried += std::string(" ") + p + " (" + ::dlerror() + ")";
    }
    if (!lib) throw Error("cannot load libbakallm_spm.so (SentencePiece shim); set BAKALLM_SPM_SHIM." + tried);
    SpmApi a{};
    resolve(lib, "bakallm_spm_load", a.load);
    resolve(lib, "bakallm_spm_free", a.free);
    resolve(lib, "bakallm_spm_encode", a.encode);
    resolve(lib, "bakallm_spm_decode", a.decode);
    resolve(lib, "bakallm_spm_free_buffer", a.free_buffer);
    resolve(lib, "bakallm_spm_piece_size", a.piece_size);
    resolve(lib, "bakallm_spm_bos_id", a.bos_id);
    resolve(lib, "bakallm_spm_eos_id", a.eos_id);
    resolve(lib, "bakallm_spm_piece_kind", a.piece_kind);
    resolve(lib, "bakallm_spm_id_to_piece", a.id_to_piece);
    return a;
  }();
  return instance;
}

const bakallm_spm* spm(void* handle) { return static_cast<const bakallm_spm*>(handle); }

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path) : path_(model_path) {
  if (!fs::is_regular_file(model_path)) throw file_error(model_path, "tokenizer not found");
  if (ends_with(model_path, ".json")) {  // a Hugging Face tokenizer.json (byte-level BPE)
    bpe_ = std::make_shared<BpeTokenizer>(model_path);
    return;
  }
  char err[512] = "";
  handle_ = api().load(model_path.c_str(), err, sizeof err);
  if (!handle_) throw file_error(model_path, std::string("not a SentencePiece model: ") + err);
}

Tokenizer::~Tokenizer() {
  if (handle_) api().free(static_cast<bakallm_spm*>(handle_));
}

Tokenizer::Tokenizer(Tokenizer&& other) noexcept
    : handle_(other.handle_), bpe_(std::move(other.bpe_)), path_(std::move(other.path_)) {
  other.handle_ = nullptr;
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text) const {
  if (bpe_) return bpe_->encode(text);
  int* ids = nullptr;
  char err[512] = "";
  const long n = api().encode(spm(handle_), text.data(), text.size(), &ids, err, sizeof err);
  if (n < 0) throw file_error(path_, std::string("encode failed: ") + err);
  std::vector<uint32_t> out(ids, ids + n);
  api().free_buffer(ids);
  return out;
}

bool Tokenizer::has_bos() const { return static_cast<int32_t>(bos_id()) >= 0; }

std::vector<uint32_t> Tokenizer::encode_document(std::string_view text, BosPolicy bos) const {
  std::vector<uint32_t> ids = encode(text);
  const bool add = bos == BosPolicy::kAdd || (bos == BosPolicy::kAuto && has_bos());
  if (add) {
    if (!has_bos()) throw file_error(path_, "has no BOS piece to add (--bos add)");
    ids.insert(ids.begin(), bos_id());
  }
  return ids;
}

std::string tokenizer_file_name(const std::string& path) {
  return ends_with(path, ".json") ? "tokenizer.json" : "tokenizer.model";
}

std::string find_tokenizer(const std::string& dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.json"})
    if (fs::exists(dir + "/" + name)) return dir + "/" + name;
  return "";
}

BosPolicy parse_bos(const std::string& name) {
  if (name == "auto") return BosPolicy::kAuto;
  if (name == "add") return BosPolicy::kAdd;
  if (name == "none") return BosPolicy::kNone;
  throw Error("--bos must be auto, add or none, got '" + name + "'");
}

void require_vocab_fits(int64_t tokenizer_vocab, int64_t model_vocab, const std::string& source) {
  if (tokenizer_vocab > model_vocab)
    throw Error(source + ": tokenizer has " + std::to_string(tokenizer_vocab) + " pieces but the model's vocab_size is " +
                std::to_string(model_vocab));
}

std::string Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (int id : v)
    if (id < 0 || id >= vocab_size())
      throw Error("token id " + std::to_string(id) + " is outside the tokenizer's vocabulary of " +
                  std::to_string(vocab_size()));
  if (bpe_) return bpe_->decode(ids);
  char* text = nullptr;
  char err[512] = "";
  const long n = api().decode(spm(handle_), v.data(), v.size(), &text, err, sizeof err);
  if (n < 0) throw file_error(path_, std::string("decode failed: ") + err);
  std::string out(text, static_cast<size_t>(n));
  api().free_buffer(text);
  return out;
}

std::string Tokenizer::piece_text(uint32_t id) const {
  if (bpe_) return bpe_->decode({id});
  const int kind = api().piece_kind(spm(handle_), static_cast<int>(id));
  if (kind == 1 || kind == 2) return "";
  char buf[256];
  const long n = api().id_to_piece(spm(handle_), static_cast<int>(id), buf, sizeof buf);
  std::string piece(buf, static_cast<size_t>(std::min<long>(n, sizeof buf - 1)));
  if (kind == 3 && piece.size() == 6)  // "<0xAB>"
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  std::string out;
  for (size_t i = 0; i < piece.size(); ++i) {
    if (piece.compare(i, 3, "\xe2\x96\x81") == 0) {  // U+2581 "▁" is a space
      out.push_back(' ');
      i += 2;
    } else {
      out.push_back(piece[i]);
    }
  }
  return out;
}

uint32_t Tokenizer::bos_id() const {
  return static_cast<uint32_t>(bpe_ ? bpe_->bos_id() : api().bos_id(spm(handle_)));
}
uint32_t Tokenizer::eos_id() const {
  return static_cast<uint32_t>(bpe_ ? bpe_->eos_id() : api().eos_id(spm(handle_)));
}
int64_t Tokenizer::vocab_size() const { return bpe_ ? bpe_->vocab_size() : api().piece_size(spm(handle_)); }

// Training runs Debian's spm_train in a child process: SentencePieceTrainer
// writes to std::cerr, which a deep-bound module cannot reach safely.
void train_tokenizer(const TokenizerTrainOptions& o) {
  if (o.inputs.empty()) throw Error("tokenizer train: no input files");
  std::string inputs;
  for (const auto& f : o.inputs) {
    if (!fs::exists(f)) throw file_error(f, "input not found");
    inputs += (inputs.empty() ? "" : ",") + f;
  }
  std::string prefix = o.out;
  if (prefix.size() > 6 && ends_with(prefix, ".model")) prefix.resize(prefix.size() - 6);
  const std::string tmp_prefix = prefix + ".tmp" + std::to_string(::getpid());
  const std::string log = tmp_prefix + ".log";
  std::vector<std::string> args = {"spm_train",
                                   "--input=" + inputs,
                                   "--model_prefix=" + tmp_prefix,
                                   "--vocab_size=" + std::to_string(o.vocab_size),
                                   "--model_type=bpe",
                                   "--byte_fallback=true",
                                   "--split_digits=true",
                                   "--character_coverage=0.99995",
                                   "--max_sentencepiece_length=16",
                                   "--unk_id=0",
                                   "--bos_id=1",
                                   "--eos_id=2",
                                   "--pad_id=-1",
                                   "--normalization_rule_name=identity",
                                   "--remove_extra_whitespaces=false",
                                   "--allow_whitespace_only_pieces=true",
                                   "--shuffle_input_sentence=true",
                                   "--hard_vocab_limit=false",
                                   "--input_sentence_size=" + std::to_string(o.max_sentences),
                                   "--num_threads=" + std::to_string(o.threads)};
  const int status = run_process(args, log);
  std::string tail;
  {
    std::ifstream in(log);
    // The last line that says what went wrong (spm_train ends with a bare
    // "Program terminated with an unrecoverable error.").
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line.find("unrecoverable error") == std::string::npos) tail = line;
    const auto why = tail.rfind("] ");
    if (tail.find("Internal:") != std::string::npos && why != std::string::npos) tail = tail.substr(why + 2);
  }
  fs::remove(log);
  if (status != 0) {
    for (const char* ext : {".model", ".vocab"}) fs::remove(tmp_prefix + ext);
    throw Error("tokenizer train: spm_train failed" + (tail.empty() ? std::string() : ": " + tail));
  }
  fs::rename(tmp_prefix + ".model", prefix + ".model");
  fs::rename(tmp_prefix + ".vocab", prefix + ".vocab");
}

std::vector<int64_t> parse_token_ids(const std::string& text, int64_t vocab, const std::string& what) {
  std::vector<int64_t> ids;
  size_t begin = 0;
  while (begin < text.size()) {  // "1,2," reads as 1,2
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      ids.push_back(v);
    } catch (const std::exception&) {
      throw Error(what + ": '" + item + "' is not a token id");
    }
    if (ids.back() < 0 || ids.back() >= vocab)
      throw Error(what + ": id " + item + " is outside the vocabulary of " + std::to_string(vocab));
    begin = end + 1;
  }
  return ids;
}

}  // namespace bakallm
