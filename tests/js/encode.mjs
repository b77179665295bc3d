// Encodes UTF-8 text files with two independent byte-level BPE
// implementations: @huggingface/tokenizers (reading TOKENIZER.json) encodes
// TEXT, and gpt-3-encoder (its own GPT-2 files; much slower) encodes PREFIX.
// Usage: node encode.mjs TOKENIZER.json TEXT PREFIX OUT.json -> {"hf": [...], "gpt3_prefix": [...]}
import fs from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";
import gpt3 from "gpt-3-encoder";

const [tokenizerPath, textPath, prefixPath, outPath] = process.argv.slice(2);
const tokenizer = new Tokenizer(JSON.parse(fs.readFileSync(tokenizerPath, "utf-8")), {});
const hf = tokenizer.encode(fs.readFileSync(textPath, "utf-8")).ids;
const gpt3_prefix = gpt3.encode(fs.readFileSync(prefixPath, "utf-8"));
fs.writeFileSync(outPath, JSON.stringify({ hf, gpt3_prefix }));
