#include "io/pickle.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "util/error.h"

namespace bakallm {

namespace {

struct Value;
using Ptr = Value*;  // owned by the Unpickler's arena: pickles may hold cycles

struct StorageRef {
  std::string key;
  torch::ScalarType dtype;
  int64_t numel;
};

struct Value {
  enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor, Mark };
  Kind kind = Kind::None;
  int64_t i = 0;
  double f = 0;
  std::string s;                          // Str; Global as "module.name"
  std::vector<Ptr> items;                 // Tuple, List
  std::vector<std::pair<Ptr, Ptr>> dict;  // Dict, in insertion order
  StorageRef storage;
  torch::Tensor tensor;
};

torch::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, torch::ScalarType> table = {
      {"torch.FloatStorage", torch::kFloat},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.HalfStorage", torch::kHalf},     {"torch.DoubleStorage", torch::kDouble},
      {"torch.LongStorage", torch::kLong},     {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},   {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},     {"torch.BoolStorage", torch::kBool}};
  auto it = table.find(global);
  return it == table.end() ? torch::ScalarType::Undefined : it->second;
}

bool allowed_global(const std::string& name) {
  return name == "collections.OrderedDict" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_parameter" || storage_dtype(name) != torch::ScalarType::Undefined;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* p, size_t n, const StorageLoader& load, std::string source)
      : p_(p), n_(n), load_(load), source_(std::move(source)) {}

  Ptr make(Value::Kind k) {
    arena_.push_back(std::make_unique<Value>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }

  Ptr run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                                // PROTO
        case 0x95: take(8); break;                               // FRAME
        case '.': return pop();                                  // STOP
        case '}': push(make(Value::Kind::Dict)); break;          // EMPTY_DICT
        case ']': push(make(Value::Kind::List)); break;          // EMPTY_LIST
        case ')': push(make(Value::Kind::Tuple)); break;         // EMPTY_TUPLE
        case '(': push(make(Value::Kind::Mark)); break;          // MARK
        case 'N': push(make(Value::Kind::None)); break;          // NONE
        case 0x88: push_bool(true); break;                       // NEWTRUE
        case 0x89: push_bool(false); break;                      // NEWFALSE
        case 'K': push_int(byte()); break;                       // BININT1
        case 'M': push_int(uint_le(2)); break;                   // BININT2
        case 'J': push_int(static_cast<int32_t>(uint_le(4))); break;  // BININT
        case 0x8a: push_int(long1()); break;                     // LONG1
        case 'G': push_float(); break;                           // BINFLOAT
        case 'X': push_str(uint_le(4)); break;                   // BINUNICODE
        case 0x8c: push_str(byte()); break;                      // SHORT_BINUNICODE
        case 'c': global(); break;                               // GLOBAL
        case 0x93: stack_global(); break;                        // STACK_GLOBAL
        case 'q': memo_[byte()] = top(); break;                  // BINPUT
        case 'r': memo_[uint_le(4)] = top(); break;              // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;           // MEMOIZE
        case 'h': push(memo_get(byte())); break;                 // BINGET
        case 'j': push(memo_get(uint_le(4))); break;             // LONG_BINGET
        case 't': push(tuple_of(pop_mark())); break;             // TUPLE
        case 0x85: tuple_n(1); break;                            // TUPLE1
        case 0x86: tuple_n(2); break;                            // TUPLE2
        case 0x87: tuple_n(3); break;                            // TUPLE3
        case 'a': append(); break;                               // APPEND
        case 'e': appends(); break;                              // APPENDS
        case 's': setitem(); break;                              // SETITEM
        case 'u': setitems(); break;                             // SETITEMS
        case 'Q': persistent_load(); break;                      // BINPERSID
        case 'R': reduce(); break;                               // REDUCE
        case 'b': build(); break;                                // BUILD
        default:
          fail("unsupported pickle opcode 0x" + hex(op) + " (not a plain state_dict?)");
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const { throw file_error(source_, why); }

  static std::string hex(uint8_t b) {
    const char* d = "0123456789abcdef";
    return {d[b >> 4], d[b & 15]};
  }

  const uint8_t* take(size_t k) {
    if (k > n_ - pos_) fail("data.pkl is truncated");
    const uint8_t* r = p_ + pos_;
    pos_ += k;
    return r;
  }
  uint8_t byte() { return *take(1); }
  uint64_t uint_le(int k) {
    const uint8_t* b = take(k);
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  int64_t long1() {
    const int k = byte();
    if (k > 8) fail("integer too large in data.pkl");
    if (k == 0) return 0;
    const uint8_t* b = take(k);
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; --i) v = (v << 8) | b[i];
    if (k < 8 && (b[k - 1] & 0x80)) v |= ~uint64_t(0) << (8 * k);  // sign-extend
    return static_cast<int64_t>(v);
  }
  std::string line() {
    std::string s;
    while (true) {
      const char c = static_cast<char>(byte());
      if (c == '\n') return s;
      s.push_back(c);
      if (s.size() > 256) fail("over-long GLOBAL name in data.pkl");
    }
  }

  void push(Ptr v) {
    if (stack_.size() > 1000000) fail("data.pkl stack too deep");
    stack_.push_back(std::move(v));
  }
  Ptr pop() {
    if (stack_.empty()) fail("data.pkl pops an empty stack");
    Ptr v = stack_.back();
    stack_.pop_back();
    if (v->kind == Value::Kind::Mark) fail("data.pkl pops a MARK");
    return v;
  }
  Ptr top() {
    if (stack_.empty()) fail("data.pkl reads an empty stack");
    return stack_.back();
  }
  std::vector<Ptr> pop_mark() {
    std::vector<Ptr> items;
    while (true) {
      if (stack_.empty()) fail("data.pkl has no MARK to pop to");
      Ptr v = stack_.back();
      stack_.pop_back();
      if (v->kind == Value::Kind::Mark) break;
      items.push_back(v);
    }
    std::reverse(items.begin(), items.end());
    return items;
  }
  Ptr memo_get(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("data.pkl reads memo slot " + std::to_string(k) + " before writing it");
    return it->second;
  }

  void push_bool(bool b) { auto v = make(Value::Kind::Bool); v->i = b; push(v); }
  void push_int(int64_t i) { auto v = make(Value::Kind::Int); v->i = i; push(v); }
  void push_float() {
    const uint8_t* b = take(8);
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];  // big-endian
    auto v = make(Value::Kind::Float);
    std::memcpy(&v->f, &bits, 8);
    push(v);
  }
  void push_str(uint64_t len) {
    auto v = make(Value::Kind::Str);
    const uint8_t* b = take(len);
    v->s.assign(reinterpret_cast<const char*>(b), len);
    push(v);
  }
  void push_global(const std::string& name) {
    if (!allowed_global(name)) fail("data.pkl refers to '" + name + "', which a state_dict never needs");
    auto v = make(Value::Kind::Global);
    v->s = name;
    push(v);
  }
  void global() {
    const std::string module = line();
    push_global(module + "." + line());
  }
  void stack_global() {
    auto name = pop();
    auto module = pop();
    if (name->kind != Value::Kind::Str || module->kind != Value::Kind::Str) fail("bad STACK_GLOBAL");
    push_global(module->s + "." + name->s);
  }

  Ptr tuple_of(std::vector<Ptr> items) {
    auto t = make(Value::Kind::Tuple);
    t->items = std::move(items);
    return t;
  }
  void tuple_n(int k) {
    std::vector<Ptr> items(k);
    for (int i = k - 1; i >= 0; --i) items[i] = pop();
    push(tuple_of(std::move(items)));
  }
  Ptr expect(Ptr v, Value::Kind k, const char* what) {
    if (v->kind != k) fail(std::string("data.pkl: expected ") + what);
    return v;
  }
  void append() {
    auto v = pop();
    expect(top(), Value::Kind::List, "a list to APPEND to")->items.push_back(v);
  }
  void appends() {
    auto items = pop_mark();
    auto list = expect(top(), Value::Kind::List, "a list to APPENDS to");
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void setitem() {
    auto value = pop();
    auto key = pop();
    expect(top(), Value::Kind::Dict, "a dict to SETITEM into")->dict.emplace_back(key, value);
  }
  void setitems() {
    auto items = pop_mark();
    if (items.size() % 2) fail("data.pkl: SETITEMS with an odd number of items");
    auto d = expect(top(), Value::Kind::Dict, "a dict to SETITEMS into");
    for (size_t i = 0; i < items.size(); i += 2) d->dict.emplace_back(items[i], items[i + 1]);
  }

  // ('storage', torch.XStorage, key, location, numel)
  void persistent_load() {
    auto pid = expect(pop(), Value::Kind::Tuple, "a persistent id tuple");
    const auto& it = pid->items;
    if (it.size() != 5 || it[0]->kind != Value::Kind::Str || it[0]->s != "storage" ||
        it[1]->kind != Value::Kind::Global || it[2]->kind != Value::Kind::Str ||
        it[4]->kind != Value::Kind::Int || it[4]->i < 0)
      fail("data.pkl: unsupported persistent id (not a tensor storage)");
    const auto dtype = storage_dtype(it[1]->s);
    if (dtype == torch::ScalarType::Undefined) fail("data.pkl: '" + it[1]->s + "' is not a storage type");
    auto v = make(Value::Kind::Storage);
    v->storage = {it[2]->s, dtype, it[4]->i};
    push(v);
  }

  std::vector<int64_t> int_tuple(const Ptr& v, const char* what) {
    if (v->kind != Value::Kind::Tuple) fail(std::string("data.pkl: tensor ") + what + " is not a tuple");
    std::vector<int64_t> out;
    for (const auto& x : v->items) {
      if (x->kind != Value::Kind::Int || x->i < 0) fail(std::string("data.pkl: bad tensor ") + what);
      out.push_back(x->i);
    }
    return out;
  }

  torch::Tensor storage_tensor(const StorageRef& ref) {
    auto cached = storages_.find(ref.key);
    if (cached != storages_.end()) return cached->second;
    auto [data, bytes] = load_(ref.key);
    const size_t need = static_cast<size_t>(ref.numel) * c10::elementSize(ref.dtype);
    if (bytes != need)
      fail("storage data/" + ref.key + " holds " + std::to_string(bytes) + " bytes, expected " +
           std::to_string(need));
    auto t = torch::empty({ref.numel}, torch::TensorOptions().dtype(ref.dtype));
    if (need) std::memcpy(t.data_ptr(), data, need);
    storages_[ref.key] = t;
    return t;
  }

  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
  Ptr rebuild_tensor(const std::vector<Ptr>& a) {
    if (a.size() < 4 || a[0]->kind != Value::Kind::Storage || a[1]->kind != Value::Kind::Int)
      fail("data.pkl: malformed _rebuild_tensor_v2 call");
    auto storage = storage_tensor(a[0]->storage);
    const int64_t offset = a[1]->i;
    const auto size = int_tuple(a[2], "size");
    const auto stride = int_tuple(a[3], "stride");
    if (size.size() != stride.size()) fail("data.pkl: tensor size and stride differ in rank");
    int64_t last = offset, numel = 1;
    for (size_t i = 0; i < size.size(); ++i) {
      numel *= size[i];
      if (size[i] > 0) last += (size[i] - 1) * stride[i];
    }
    if (offset < 0 || (numel > 0 && last >= storage.numel()))
      fail("data.pkl: a tensor reaches past the end of storage data/" + a[0]->storage.key);
    auto v = make(Value::Kind::Tensor);
    v->tensor = storage.as_strided(size, stride, offset).clone();
    return v;
  }

  void reduce() {
    auto args = expect(pop(), Value::Kind::Tuple, "an argument tuple for REDUCE");
    auto fn = expect(pop(), Value::Kind::Global, "a callable for REDUCE");
    if (fn->s == "collections.OrderedDict") {
      push(make(Value::Kind::Dict));
    } else if (fn->s == "torch._utils._rebuild_tensor_v2") {
      push(rebuild_tensor(args->items));
    } else if (fn->s == "torch._utils._rebuild_parameter") {
      if (args->items.empty() || args->items[0]->kind != Value::Kind::Tensor)
        fail("data.pkl: malformed _rebuild_parameter call");
      push(args->items[0]);
    } else {
      fail("data.pkl: cannot call '" + fn->s + "'");
    }
  }

  // OrderedDict's state is its __dict__ (e.g. `_metadata`): not needed.
  void build() {
    pop();
    if (top()->kind != Value::Kind::Dict && top()->kind != Value::Kind::Tensor)
      fail("data.pkl: BUILD on an unsupported object");
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  const StorageLoader& load_;
  std::string source_;
  std::vector<std::unique_ptr<Value>> arena_;
  std::vector<Ptr> stack_;
  std::unordered_map<uint64_t, Ptr> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

const Value* find_key(const Value& dict, const std::string& key) {
  for (const auto& [k, v] : dict.dict)
    if (k->kind == Value::Kind::Str && k->s == key) return v;
  return nullptr;
}

}  // namespace

std::map<std::string, torch::Tensor> unpickle_state_dict(const uint8_t* bytes, size_t size,
                                                         const StorageLoader& load,
                                                         const std::string& source) {
  Unpickler unpickler(bytes, size, load, source);
  const Value* dict = unpickler.run();
  if (dict->kind != Value::Kind::Dict) throw file_error(source, "does not hold a dict of tensors");
  for (const char* wrapper : {"state_dict", "model"}) {
    const Value* inner = find_key(*dict, wrapper);
    if (inner && inner->kind == Value::Kind::Dict) dict = inner;
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, v] : dict->dict) {
    if (k->kind != Value::Kind::Str) throw file_error(source, "state_dict has a non-string key");
    if (v->kind != Value::Kind::Tensor) continue;  // e.g. a saved step counter
    out[k->s] = v->tensor;
  }
  if (out.empty()) throw file_error(source, "holds no tensors");
  return out;
}

}  // namespace bakallm
