// The playground page in a real browser (Debian's chromium, headless, driven
// by puppeteer-core): load it, submit a prompt, watch the text stream in.
//   node playground.mjs URL CHROMIUM SCREENSHOT.png
// Prints {"text", "updates", "status"}; exits 1 unless text streamed in.
import puppeteer from "puppeteer-core";

const [url, chromium, screenshot] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 800 });
  await page.goto(url, { waitUntil: "networkidle0" });
  await page.waitForFunction(() => document.getElementById("model").textContent.startsWith("model: ") &&
                                    !document.getElementById("model").textContent.includes("…"));
  await page.evaluate(() => {
    document.getElementById("prompt").value = "Once upon a time";
    document.getElementById("max_tokens").value = "24";
    document.getElementById("temperature").value = "0";
    window.__updates = 0;
    new MutationObserver(() => window.__updates++).observe(document.getElementById("out"),
                                                            { childList: true, characterData: true, subtree: true });
  });
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("status").textContent === "done", { timeout: 60000 });
  const result = await page.evaluate(() => ({
    text: document.getElementById("out").textContent,
    updates: window.__updates,
    status: document.getElementById("status").textContent,
  }));
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify(result));
  process.exitCode = result.text.length > 0 && result.updates > 1 ? 0 : 1;
} finally {
  await browser.close();
}
