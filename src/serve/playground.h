// The playground page served at `/`: plain HTML and JavaScript, no build
// step. It streams /v1/completions over SSE and can keep a session.
#pragma once

namespace bakallm {

inline const char* playground_html() {
  return R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bakallm playground</title>
<style>
body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;padding:0 1em;color:#222}
textarea{width:100%;height:8em;font:14px monospace}
#out{white-space:pre-wrap;border:1px solid #ccc;min-height:8em;padding:.5em;font:14px monospace;background:#fafafa}
label{margin-right:1em} input[type=number]{width:5em}
</style></head><body>
<h1>bakallm playground</h1>
<p id="model">model: …</p>
<textarea id="prompt">Once upon a time</textarea>
<div>
<label>max tokens <input id="max_tokens" type="number" value="64" min="1"></label>
<label>temperature <input id="temperature" type="number" value="0.8" step="0.1" min="0" max="2"></label>
<label>top p <input id="top_p" type="number" value="0.95" step="0.05" min="0" max="1"></label>
<label>top k <input id="top_k" type="number" value="40" min="0"></label>
<label>seed <input id="seed" type="number" value="0" min="0"></label>
<label><input id="session" type="checkbox"> keep a session</label>
</div>
<p><button id="go">Generate</button> <button id="stop" disabled>Stop</button> <span id="status"></span></p>
<div id="out"></div>
<script>
const $ = id => document.getElementById(id);
const sessionId = 'pg-' + Math.random().toString(36).slice(2, 10);
let controller = null;
fetch('/v1/models').then(r => r.json()).then(j => { $('model').textContent = 'model: ' + j.data[0].id; });
$('stop').onclick = () => { if (controller) controller.abort(); };
$('go').onclick = async () => {
  const body = {prompt: $('prompt').value, stream: true, max_tokens: +$('max_tokens').value,
                temperature: +$('temperature').value, top_p: +$('top_p').value, top_k: +$('top_k').value,
                seed: +$('seed').value};
  if ($('session').checked) body.session = sessionId; else $('out').textContent = '';
  controller = new AbortController();
  $('go').disabled = true; $('stop').disabled = false; $('status').textContent = 'generating…';
  try {
    const res = await fetch('/v1/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                body: JSON.stringify(body), signal: controller.signal});
    if (!res.ok) { $('status').textContent = (await res.json()).error.message; return; }
    const reader = res.body.getReader(), dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') { $('status').textContent = 'done'; continue; }
        const j = JSON.parse(data);
        $('out').textContent += j.choices[0].text;
        if (j.usage) $('status').textContent = j.usage.completion_tokens + ' tokens';
      }
    }
  } catch (e) { $('status').textContent = 'stopped'; }
  finally { $('go').disabled = false; $('stop').disabled = true; controller = null; }
};
</script></body></html>
)HTML";
}

}  // namespace bakallm
