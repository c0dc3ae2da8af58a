// Opens a deployment's custom-run form in both of Prefect's UIs, in Debian's Chromium, and reports what a user sees:
// the field labels, where a valid submission leads, and what an invalid one shows.
// Usage: node run_form.mjs UI_URL DEPLOYMENT_ID SCREENSHOT_DIR VALID_JSON INVALID_JSON   (prints one JSON document)
import { launch, prefectAuthorization, signInToPrefect } from "./browser.mjs";

const [ui, deploymentId, shots, validJson, invalidJson] = process.argv.slice(2);
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

// The next form is submitted once the run this one created has finished: on the tests' SQLite server, a submission
// racing that run's writes is answered 503 ("database is locked"), which Prefect's clients retry and its UIs do not.
async function untilFinished(page, runUrl) {
  const id = runUrl.match(/flow-run\/([0-9a-f-]{36})/)?.[1];
  for (let waited = 0; id && waited < 120000; waited += 500) {
    const run = await (await page.request.get(`${ui}/api/flow_runs/${id}`, { headers: prefectAuthorization() })).json();
    if (["COMPLETED", "FAILED", "CRASHED", "CANCELLED"].includes(run.state?.type)) return;
    await page.waitForTimeout(500);
  }
}

async function submit(page) {
  await page.getByRole("button", { name: "Submit" }).click();
  await page.waitForTimeout(2500);
}

const browser = await launch();
const report = {};
try {
  for (const [name, url] of Object.entries(FORMS)) {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1400 } });
    // What went wrong, should a submission not lead anywhere: failed API calls and the page's own errors.
    const problems = [];
    // (Prefect's UI also calls analytics hosts, unreachable here and beside the point.)
    const ours = (url) => url.startsWith(ui);
    page.on("response", (r) => { if (r.status() >= 400 && ours(r.url())) problems.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
    page.on("requestfailed", (r) => { if (ours(r.url())) problems.push(`failed ${r.method()} ${r.url()}: ${r.failure()?.errorText}`); });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    const valid = JSON.parse(validJson), invalid = JSON.parse(invalidJson);
    await signInToPrefect(page, ui);
    problems.length = 0;  // the sign-in page's own calls before the credential is given answer 401
    await open(page, url, Object.keys(valid)[0]);
    const labels = await page.locator("label").allInnerTexts();
    const text = await page.locator("body").innerText();

    await fill(page, invalid);
    await submit(page);
    const invalidUrl = page.url();
    const invalidText = await page.locator("body").innerText();
    const invalidMessages = await validationMessages(page, Object.keys(invalid));
    await page.screenshot({ path: `${shots}/${name}-invalid.png`, fullPage: true });

    problems.length = 0;  // the invalid submission's 409 is the server refusing it, as it should
    await open(page, url, Object.keys(valid)[0]);
    await fill(page, valid);
    await page.waitForTimeout(500);
    await submit(page);
    await page.waitForURL((u) => !u.pathname.endsWith("/run"), { timeout: 30000 }).catch(() => {});
    // Prefect's SQLite server sometimes answers the UI's create_flow_run with 503 "database is locked" (a deferred
    // transaction that loses the race to a concurrent writer); the UI shows an error and its user presses Submit again.
    // The server created nothing, so the test does what the user does; any other problem is left to fail the test.
    const busy = () => problems.filter((p) => p.startsWith("503 POST") && p.endsWith("/create_flow_run")).length;
    for (let again = 0; again < 3 && busy() > again && page.url().endsWith("/run"); again++) {
      await submit(page);
      await page.waitForURL((u) => !u.pathname.endsWith("/run"), { timeout: 30000 }).catch(() => {});
    }
    await page.screenshot({ path: `${shots}/${name}-valid.png`, fullPage: true });
    await untilFinished(page, page.url());
    report[name] = { labels, text, invalidUrl, invalidText, invalidMessages, validUrl: page.url(), problems };
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
