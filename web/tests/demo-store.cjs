// Opens the demo store in headless Chromium, shops like a person who then leaves, and
// prints what happened as one JSON line. Used by e2e/tests/browser.rs.
//
//   NODE_PATH=…/node_modules node demo-store.cjs STORE_URL
const { chromium } = require("playwright-core");

(async () => {

const storeUrl = process.argv[2];
const executablePath = process.env.NUDGE_CHROMIUM || "/usr/bin/chromium";
const result = { console: [], errors: [] };

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => result.console.push(m.text()));
  page.on("pageerror", (e) => result.errors.push(e.message));
  await page.goto(storeUrl);
  // The snippet opens its socket before the shopper does anything.
  await page.waitForFunction(() => document.getElementById("log").textContent.includes("socket_open"), null,
    { timeout: 15000 });
  await page.click(".card >> nth=0 >> [data-act=view]");
  await page.click(".card >> nth=0 >> [data-act=add]");
  await page.click(".card >> nth=1 >> [data-act=view]");
  await page.click(".card >> nth=1 >> [data-act=add]");
  await page.waitForFunction(() => document.getElementById("log").textContent.includes('"sent"'), null,
    { timeout: 15000 });
  // Leave through the top of the window: the pointer exits the document with no target.
  await page.mouse.move(400, 300);
  await page.mouse.move(400, 0);
  await page.evaluate(() => document.dispatchEvent(new MouseEvent("mouseout", { clientY: 0, relatedTarget: null, bubbles: true })));
  const box = await page.waitForSelector("#nudge-intervention", { timeout: 20000 });
  result.intervention = (await box.textContent()).trim();
  result.log = await page.textContent("#log");
} catch (e) {
  result.failure = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
})().catch((e) => {
  console.log(JSON.stringify({ failure: String(e) }));
  process.exit(1);
});
