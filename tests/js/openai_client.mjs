// The official OpenAI client for Node against `bakallm serve`:
//   node openai_client.mjs BASE_URL API_KEY
// Completions and chat, streamed and not; the streamed text must equal the
// whole answer. Prints one JSON object; exits 1 on a mismatch.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey });
const model = (await client.models.list()).data[0].id;
const sampling = { model, max_tokens: 8, temperature: 0 };

const whole = await client.completions.create({ ...sampling, prompt: "Once upon a time" });
let streamed = "";
for await (const chunk of await client.completions.create({ ...sampling, prompt: "Once upon a time", stream: true }))
  streamed += chunk.choices[0]?.text ?? "";

const messages = [{ role: "user", content: "Tell me a story." }];
const chat = await client.chat.completions.create({ ...sampling, messages });
let chatStreamed = "";
for await (const chunk of await client.chat.completions.create({ ...sampling, messages, stream: true }))
  chatStreamed += chunk.choices[0]?.delta?.content ?? "";

let badRequest = null;
try {
  await client.completions.create({ ...sampling, prompt: "x", temperature: 7 });
} catch (e) {
  badRequest = { status: e.status, message: e.error?.message ?? e.message };
}

const out = {
  model,
  completion: whole.choices[0].text,
  completion_usage: whole.usage,
  completion_streamed: streamed,
  chat: chat.choices[0].message.content,
  chat_role: chat.choices[0].message.role,
  chat_streamed: chatStreamed,
  bad_request: badRequest,
};
console.log(JSON.stringify(out));
process.exit(out.completion === streamed && out.chat === chatStreamed && badRequest?.status === 400 ? 0 : 1);
