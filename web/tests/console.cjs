// Drives the merchant console in headless Chromium as a new merchant would: sign up, copy
// the snippet into the shop, watch the first event arrive, create a secret key (shown
// once) and revoke it. Used by e2e/tests/console.rs, which serves the shop.
//
//   NODE_PATH=…/node_modules node console.cjs CONSOLE_URL SHOP_URL SCREENSHOT_DIR EMAIL
//
// It prints one JSON line per step that needs the test ({"step": …}) and waits for a line
// on standard input before going on; the last line printed is the result.
const { chromium } = require("playwright-core");
const fs = require("fs");
const readline = require("readline");

const [consoleUrl, shopUrl, shots, email] = process.argv.slice(2);
const executablePath = process.env.NUDGE_CHROMIUM || "/usr/bin/chromium";
const result = { console: [], errors: [], csp: [], steps: [] };
const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

async function handOver(step, data) {
  console.log(JSON.stringify(Object.assign({ step }, data)));
  const reply = await lines.next();
  if (reply.done || reply.value.trim() !== "go") throw new Error("the test did not let step " + step + " go on");
}

// Chromium now and then refuses one capture ("Unable to capture screenshot") and takes the
// same picture when asked again a moment later; a picture is the record of a page, not what
// the test checks, so that refusal is retried a few times before it counts.
async function shot(page, path, options = { fullPage: true }) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await page.screenshot(Object.assign({ path }, options));
    } catch (e) {
      if (attempt >= 5 || !/Unable to capture screenshot/.test(String(e && e.message))) throw e;
      await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
    }
  }
}

function watch(page, name) {
  page.on("console", (m) => {
    result.console.push(name + ": " + m.text());
    if (/Content Security Policy/i.test(m.text())) result.csp.push(name + ": " + m.text());
  });
  page.on("pageerror", (e) => result.errors.push(name + ": " + e.message));
}

(async () => {
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  watch(page, "console");
  page.on("dialog", (d) => d.accept());

  // Sign up, with the keyboard only.
  await page.goto(consoleUrl + "/console/signup");
  await shot(page, shots + "/signup.png");
  await page.focus("#name");
  await page.keyboard.type("Demo Outdoor Co.");
  await page.keyboard.press("Tab");
  await page.keyboard.type(shopUrl);
  await page.keyboard.press("Tab");
  await page.keyboard.type(email);
  await page.keyboard.press("Tab");
  await page.keyboard.type("correct horse battery staple");
  await page.keyboard.press("Enter");
  await page.waitForURL(consoleUrl + "/console", { timeout: 30000 });
  result.steps.push("signed up");
  result.signupSecret = (await page.textContent("#signup-secret")).trim();
  result.snippet = (await page.textContent("#snippet")).trim();
  result.waiting = await page.getAttribute("#first-event", "data-state");
  await shot(page, shots + "/overview-waiting.png");

  // The secret key is shown once: a reload no longer has it.
  await page.reload();
  result.secretAfterReload = await page.$("#signup-secret") !== null;

  // Install the snippet in the shop (the test serves what is pasted), then wait for the
  // test to see the store's key at its cell.
  const pasted = await fetch(shopUrl + "/snippet", { method: "PUT", body: result.snippet });
  if (!pasted.ok) throw new Error("the shop refused the snippet: " + pasted.status);
  await handOver("snippet", { snippet: result.snippet });

  const shop = await context.newPage();
  watch(shop, "shop");
  await shop.goto(shopUrl);
  await shop.waitForFunction(() => window.nudge && window.nudge.shopperId, null, { timeout: 15000 });
  await shop.click("#add");
  result.shopperId = await shop.evaluate(() => window.nudge.shopperId);
  result.steps.push("shopped");

  // The waiting view turns green by itself (server-sent events).
  await page.bringToFront();
  await page.waitForSelector("#first-event[data-state=received]", { timeout: 60000 });
  result.received = (await page.textContent("#first-event")).trim();
  await page.reload();
  await page.waitForSelector("#accepted");
  await shot(page, shots + "/overview.png");
  result.steps.push("first event seen");

  // A test message to the shopper's open page, from the overview.
  await page.fill("#test-shopper", result.shopperId);
  await page.click("button:has-text('Send a test message')");
  await page.waitForSelector("#test-result");
  result.testResult = (await page.textContent("#test-result")).trim();
  await shop.waitForFunction(() => {
    const shown = document.querySelector("#nudge-intervention");
    return shown && shown.textContent.includes("Nudge is installed");
  }, null, { timeout: 15000 });
  result.testShown = (await shop.textContent("#nudge-intervention")).trim();
  result.steps.push("test message shown");

  // An announcement to every open page of the shop, from the overview.
  await page.fill("#announce-heading", "Free shipping until midnight");
  await page.fill("#announce-body", "On every order, today only.");
  await page.click("button:has-text('Announce')");
  await page.waitForSelector("#announce-result");
  result.announceResult = (await page.textContent("#announce-result")).trim();
  await shot(page, shots + "/announced.png");
  await shop.waitForFunction(() => {
    const shown = document.querySelector("#nudge-announcement");
    return shown && shown.textContent.includes("Free shipping until midnight");
  }, null, { timeout: 15000 });
  result.announcementShown = (await shop.textContent("#nudge-announcement")).trim();
  // The test message's banner is still there beside it.
  result.interventionStillShown = (await shop.textContent("#nudge-intervention")).trim();
  result.steps.push("announcement shown");

  // The live events show the shop's page views.
  await page.click("nav >> text=Live events");
  await page.waitForURL(/\/console\/events/);
  for (let attempt = 0; attempt < 20 && !(await page.$("tr[data-type=page_view]")); attempt++) {
    await page.waitForTimeout(500);
    await page.goto(consoleUrl + "/console/events");
  }
  result.liveEvents = await page.$$eval("tr[data-type]", (rows) => rows.map((r) => r.getAttribute("data-type")));
  await shot(page, shots + "/events.png");
  await page.click("nav >> text=Overview");
  result.steps.push("live events seen");

  // A campaign: a mistake named by the API, then saved, activated, and seen on the shop.
  await page.click("nav >> text=Campaigns");
  await page.click("text=New campaign");
  await page.fill("#c-name", "Come back");
  await page.fill("#c-condition", "cart_value >>= 5");
  await page.fill("#c-control", "0");
  await page.fill("#c-title", "Wait, your tent!");
  await page.fill("#c-body", "Your {{ cart_items }} items are waiting.");
  await page.click("button:has-text('Save as draft') >> nth=0");
  result.campaignProblems = (await page.textContent("#problems")).replace(/\s+/g, " ").trim();
  await shot(page, shots + "/campaign-problems.png");
  await page.fill("#c-condition", "cart_value > 0");
  await page.click("button:has-text('Save as draft') >> nth=0");
  await page.waitForURL(/\/console\/campaigns\/cmp_[^/?]+\?done=created$/);
  result.campaignId = new URL(page.url()).pathname.split("/").pop();
  result.campaignDraft = (await page.textContent("#campaign-state")).trim();
  await page.click("button:has-text('Activate')");
  await page.waitForURL(/done=active$/);
  result.campaignActive = (await page.textContent("#campaign-state")).trim();
  await shot(page, shots + "/campaign.png");
  // Shoppers leave with a full cart until one sees the campaign's message (the cell learns
  // of the campaign within moments; a shopper it reached before that got the default
  // reminder instead and is replaced by a new one).
  for (let attempt = 0; attempt < 10 && !result.campaignShown; attempt++) {
    await shop.evaluate(() => localStorage.removeItem("nudge_shopper_id"));
    await shop.reload();
    await shop.waitForFunction(() => window.nudge && window.nudge.shopperId, null, { timeout: 15000 });
    await shop.click("#add");
    await shop.waitForTimeout(500);
    await shop.mouse.move(400, 300);
    await shop.mouse.move(400, 0);
    await shop.evaluate(() => document.dispatchEvent(new MouseEvent("mouseout", { clientY: 0, relatedTarget: null, bubbles: true })));
    try {
      await shop.waitForSelector("#nudge-intervention", { timeout: 8000 });
      const text = (await shop.textContent("#nudge-intervention")).trim();
      if (text.includes("Wait, your tent!")) {
        result.campaignShown = text;
        result.shopperId = await shop.evaluate(() => window.nudge.shopperId);
      }
    } catch (e) { /* nothing shown this time */ }
  }
  await shot(shop, shots + "/shop-campaign.png", {});
  await page.goto(consoleUrl + "/console/campaigns");
  result.campaignListed = (await page.textContent("table.campaigns")).replace(/\s+/g, " ").trim();
  result.steps.push("campaign shown");

  // Analytics: the campaign's treated shopper and the message shown reach its report (the
  // cell counts them as the events arrive; the page is read again until they have).
  await page.click("nav >> text=Analytics");
  await page.waitForURL(consoleUrl + "/console/analytics");
  const funnel = "section.report[data-campaign='" + result.campaignId + "'] [data-funnel]";
  for (let attempt = 0; attempt < 40; attempt++) {
    const figures = await page.getAttribute(funnel, "data-funnel").catch(() => null);
    result.analyticsFunnel = figures;
    if (figures && figures.split(",").map(Number)[1] >= 1) break;
    await page.waitForTimeout(750);
    await page.reload();
  }
  result.analyticsProblem = await page.$eval(".problem", (e) => e.textContent.trim()).catch(() => null);
  result.model = (await page.textContent("#model")).replace(/\s+/g, " ").trim();
  result.rollout = (await page.textContent("#rollout")).replace(/\s+/g, " ").trim();
  await shot(page, shots + "/analytics.png");
  result.steps.push("seen in analytics");

  // A secret key: created, shown once, revoked.
  await page.click("nav >> text=API keys");
  await page.waitForURL(consoleUrl + "/console/keys");
  await page.click("button:has-text('Create key')");
  result.emptyKeyErrors = await page.$$eval(".field-error", (els) => els.map((e) => e.textContent.trim()));
  await page.fill("#key-name", "Order server");
  await page.check("input[name=scope][value='events:write']");
  await page.click("button:has-text('Create key')");
  await page.waitForURL((url) => url.pathname === "/console/keys/created" && url.searchParams.has("key"));
  result.newSecret = (await page.textContent("#new-secret")).trim();
  await shot(page, shots + "/key-created.png");
  await page.reload();
  result.createdAfterReload = (await page.textContent("main")).includes("already been shown");
  await page.goto(consoleUrl + "/console/keys");
  const row = page.locator("tr", { hasText: "Order server" });
  await row.locator("button:has-text('Revoke')").click();
  await page.waitForURL(consoleUrl + "/console/keys?done=revoked");
  result.revokedRow = (await page.locator("tr", { hasText: "Order server" }).textContent()).replace(/\s+/g, " ").trim();
  await shot(page, shots + "/keys.png");

  // Billing: the plan and this month's events; this platform bills no one, and says so.
  await page.click("nav >> text=Billing");
  result.billing = {
    plan: (await page.textContent("#plan")).trim(),
    used: parseInt((await page.textContent("#events-used")).trim(), 10),
    off: await page.$("#billing-off") !== null,
  };
  await shot(page, shots + "/billing.png");

  // The team: adding someone without an account says what to do.
  await page.click("nav >> text=Team");
  await page.fill("#member-email", "nobody-yet@example.com");
  await page.selectOption("#member-role", "analyst");
  await page.click("button:has-text('Add member')");
  result.teamProblem = (await page.textContent(".problem")).trim();
  await shot(page, shots + "/team.png");

  // The shopper asks to be forgotten: filed, followed until done, receipt downloaded.
  await page.click("nav >> text=Privacy");
  await page.fill("#erase-value", result.shopperId);
  await page.click("button:has-text('File erasure request')");
  await page.waitForURL(/\/console\/privacy\/erasures\/[^/]+$/);
  result.erasureUrl = page.url();
  await page.waitForSelector("#erasure-status[data-state=completed]", { timeout: 60000 });
  await shot(page, shots + "/erasure.png");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#receipt")]);
  result.receiptFile = download.suggestedFilename();
  result.receipt = JSON.parse(fs.readFileSync(await download.path(), "utf8"));
  await page.click("text=← Privacy");
  result.erasureListed = (await page.textContent("table.erasures")).includes("Completed");
  result.retention = (await page.textContent("#retention")).replace(/\s+/g, " ").trim();
  await shot(page, shots + "/privacy.png");
  result.steps.push("erased");

  // Narrow screens: every main page still fits (wide tables scroll inside their frame).
  await page.setViewportSize({ width: 360, height: 800 });
  result.narrowOverflow = 0;
  result.narrowPages = {};
  for (const path of ["", "/analytics", "/events", "/campaigns", "/keys", "/billing", "/team", "/privacy"]) {
    await page.goto(consoleUrl + "/console" + path);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    result.narrowPages[path || "/"] = overflow;
    if (overflow > 0) {
      result.narrowCulprits = result.narrowCulprits || {};
      result.narrowCulprits[path] = await page.evaluate(() => Array.from(document.querySelectorAll("body *"))
        .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1 && !el.closest("nav, .table-wrap"))
        .slice(0, 6).map((el) => el.tagName + "." + el.className + " " + Math.round(el.getBoundingClientRect().right)));
    }
    result.narrowOverflow = Math.max(result.narrowOverflow, overflow);
  }
  await page.goto(consoleUrl + "/console");
  await shot(page, shots + "/overview-narrow.png");

  // Signing out ends the session: the console sends the browser to the sign-in page.
  await page.click("button:has-text('Sign out')");
  await page.waitForURL(consoleUrl + "/console/login");
  await page.goto(consoleUrl + "/console/keys");
  result.afterSignOut = page.url();
} catch (e) {
  result.failure = String(e && e.stack || e);
} finally {
  await browser.close();
  input.close();
}
console.log(JSON.stringify(result));
})();
