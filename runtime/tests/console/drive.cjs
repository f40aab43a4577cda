// Drives the console of a running runtime in headless Chromium (tests/console.rs starts the
// stack and runs this). Each step waits for what the page must show and fails with what it
// showed instead. Prints the figures it measured as one JSON line.
//
// Environment: PLAYWRIGHT (playwright-core's directory), CONSOLE_URL, ADMIN_TOKEN, NEXT_WASM
// (a version to upload), RUNTIME_PID (killed at the end, to see the banner), SCREENSHOT
// (optional: where to keep a picture of the page), PIPELINE, BAD_VALUE (text of a record that
// fails, to find among the last failures).
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");
const { chromium } = require(process.env.PLAYWRIGHT);

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const url = env("CONSOLE_URL");
const pipeline = env("PIPELINE");
const nextWasm = env("NEXT_WASM");
const nextSha = crypto.createHash("sha256").update(fs.readFileSync(nextWasm)).digest("hex");
const STEP_MS = 60000;

function step(name) {
  console.error(`console: ${name}`);
}

async function main() {
  // Playwright starts it headless on a fresh profile of its own.
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const figures = {};
  const errors = [];
  let page;
  try {
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(STEP_MS);
    // The page may fetch from its own origin only.
    const origin = new URL(url).origin;
    const foreign = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) foreign.push(r.url());
    });
    page.on("pageerror", (e) => errors.push(String(e)));

    step("load");
    const started = Date.now();
    await page.goto(url, { waitUntil: "load" });
    figures.load_ms = Date.now() - started;

    step("a wrong token is refused, the right one is taken");
    await page.locator("#token-form").waitFor({ state: "visible" });
    await page.fill("#token", "not-the-token");
    await page.click('#token-form button[type="submit"]');
    await page.locator("#message", { hasText: "refused" }).waitFor();
    await page.fill("#token", env("ADMIN_TOKEN"));
    const submitted = Date.now();
    await page.click('#token-form button[type="submit"]');
    const section = page.locator(`section.pipeline[data-pipeline="${pipeline}"]`);
    await section.locator('[data-field="state"]', { hasText: "running" }).waitFor();
    figures.first_render_ms = Date.now() - submitted;
    // Bytes as served (the page, its script and style; then one poll of /overview).
    Object.assign(figures, await page.evaluate(() => {
      const [nav] = performance.getEntriesByType("navigation");
      const resources = performance.getEntriesByType("resource");
      const files = resources.filter((r) => !r.name.includes("/overview"));
      const polls = resources.filter((r) => r.name.includes("/overview"));
      return {
        page_bytes: nav.encodedBodySize + files.reduce((n, r) => n + r.encodedBodySize, 0),
        overview_bytes: polls.length ? polls[polls.length - 1].encodedBodySize : 0,
      };
    }));

    step("counters move");
    const records = async () => Number((await section.locator('[data-field="in"]').textContent()).replace(/,/g, ""));
    const before = await records();
    await waitUntil(async () => (await records()) > before, "the records-in counter to move", records);
    await waitUntil(async () => (await section.locator("polyline.in").getAttribute("points")).split(" ").length >= 3,
      "the chart to draw three points", () => section.locator("polyline.in").getAttribute("points"));
    await section.locator('[data-part="endpoints"]', { hasText: "Kafka lag" }).waitFor();

    step("the failed record is listed");
    await section.locator('[data-part="failures"]', { hasText: env("BAD_VALUE") }).waitFor();

    const slot = section.locator(".slot").first();
    const liveSha = () => slot.locator('[data-field="sha256"]').getAttribute("title");
    const firstSha = await liveSha();

    step("an upload swaps the plugin");
    page.on("dialog", (d) => d.accept());
    await chooseFile(page, slot.locator('[data-action="upload"]'), nextWasm);
    await waitUntil(async () => (await liveSha()) === nextSha, `the live version to become ${nextSha}`, liveSha);
    await slot.locator('[data-field="history"]', { hasText: firstSha.slice(0, 12) }).waitFor();

    step("the rollback button rolls back");
    await slot.locator('[data-action="rollback"]').click();
    await waitUntil(async () => (await liveSha()) === firstSha, `the live version to be ${firstSha} again`, liveSha);

    step("a shadow run shows its differences and stops");
    await chooseFile(page, slot.locator('[data-action="start-shadow"]'), nextWasm);
    const different = slot.locator('[data-field="different"]');
    await waitUntil(async () => Number(((await different.textContent().catch(() => "0")) || "0").replace(/,/g, "")) > 0,
      "the shadow to count differences", () => slot.locator('[data-part="shadow"]').textContent());
    // The differing outputs are shown as JSON: the shadow's carries the field enrich_next adds.
    await slot.locator('[data-part="shadow"]', { hasText: '"enrich_version":2' }).waitFor();
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    await slot.locator('[data-action="stop-shadow"]').click();
    await slot.locator('[data-action="start-shadow"]').waitFor();
    if ((await liveSha()) !== firstSha) throw new Error("stopping the shadow changed the live version");

    step("a stopped runtime shows the banner");
    process.kill(Number(env("RUNTIME_PID")), "SIGKILL");
    const killed = Date.now();
    await page.locator("#banner", { hasText: "not answering" }).waitFor({ state: "visible" });
    figures.banner_ms = Date.now() - killed;

    if (foreign.length) throw new Error(`the page fetched from elsewhere: ${foreign.join(", ")}`);
    if (errors.length) throw new Error(`the page's script failed: ${errors.join("; ")}`);
  } catch (e) {
    // What the page said last, to tell a page bug from a slow runtime.
    const message = await page?.locator("#message").textContent().catch(() => "");
    console.error(`page message: ${message}\npage errors: ${errors.join("; ") || "none"}`);
    throw e;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(figures));
}

/** Clicks `button` and gives the file chooser it opens `file`. */
async function chooseFile(page, button, file) {
  const [chooser] = await Promise.all([page.waitForEvent("filechooser"), button.click()]);
  await chooser.setFiles(file);
}

async function waitUntil(check, what, shown) {
  const deadline = Date.now() + STEP_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`waited ${STEP_MS / 1000} s for ${what}; the page shows: ${await shown()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
