// Opens a deployment's custom-run form in both of Prefect's UIs, in Debian's Chromium, and reports what a user sees:
// the field labels, where a valid submission leads, and what an invalid one shows.
// Usage: node run_form.mjs UI_URL DEPLOYMENT_ID SCREENSHOT_DIR VALID_JSON INVALID_JSON   (prints one JSON document)
import { chromium } from "playwright-core";

const [ui, deploymentId, shots, validJson, invalidJson] = process.argv.slice(2);
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const FORMS = { v1: `${ui}/deployments/deployment/${deploymentId}/run`, v2: `${ui}/v2/deployments/deployment/${deploymentId}/run` };

async function field(page, label) {
  const title = page.locator("label", { hasText: new RegExp(`^${label}( \\(Optional\\))?$`) }).first();
  return title.locator("xpath=ancestor::*[.//input or .//textarea][1]").locator("input, textarea").first();
}

async function fill(page, values) {
  for (const [label, value] of Object.entries(values)) {
    const input = await field(page, label);
    await input.fill(String(value));
  }
}

async function open(page, url, firstLabel) {
  await page.goto(url);
  await page.locator("label", { hasText: firstLabel }).first().waitFor({ timeout: 30000 });
}

async function validationMessages(page, labels) {
  const messages = {};
  for (const label of labels) {
    messages[label] = await (await field(page, label)).evaluate((el) => el.validationMessage);
  }
  return messages;
}

async function submit(page) {
  await page.getByRole("button", { name: "Submit" }).click();
  await page.waitForTimeout(2500);
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
const report = {};
try {
  for (const [name, url] of Object.entries(FORMS)) {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1400 } });
    const valid = JSON.parse(validJson), invalid = JSON.parse(invalidJson);
    await open(page, url, Object.keys(valid)[0]);
    const labels = await page.locator("label").allInnerTexts();
    const text = await page.locator("body").innerText();

    await fill(page, invalid);
    await submit(page);
    const invalidUrl = page.url();
    const invalidText = await page.locator("body").innerText();
    const invalidMessages = await validationMessages(page, Object.keys(invalid));
    await page.screenshot({ path: `${shots}/${name}-invalid.png`, fullPage: true });

    await open(page, url, Object.keys(valid)[0]);
    await fill(page, valid);
    await page.waitForTimeout(500);
    await submit(page);
    await page.waitForURL((u) => !u.pathname.endsWith("/run"), { timeout: 30000 }).catch(() => {});
    await page.screenshot({ path: `${shots}/${name}-valid.png`, fullPage: true });
    report[name] = { labels, text, invalidUrl, invalidText, invalidMessages, validUrl: page.url() };
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
