// What the browser scripts share: Debian's Chromium started as every test starts it, signing in to granary api and to
// Prefect's UI, and waiting on a job's page until the job has ended.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export function launch(extraArgs = []) {
  return chromium.launch({ executablePath: "/usr/bin/chromium", args: [...CHROMIUM_ARGS, ...extraArgs] });
}

export async function signIn(page, api, token) {
  await page.goto(`${api}/login`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("signed in as").first().waitFor({ timeout: 10000 });
}

// Submit the run form on `page`, then reload the job page it leads to until the job has ended (or `seconds` pass);
// returns the job's id and its last status.
export async function executeAndWait(page, seconds) {
  await page.getByRole("button", { name: "Execute" }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]+\?f=html$/, { timeout: 30000 });
  const jobId = new URL(page.url()).pathname.split("/").pop();
  let status = "";
  for (let waited = 0; waited < seconds && !["successful", "failed", "dismissed"].includes(status); waited++) {
    await page.waitForTimeout(1000);
    await page.reload();
    status = (await page.locator("#status").textContent()).trim();
  }
  return { jobId, status };
}

// Prefect's server requires its credential (the tests give every process PREFECT_API_AUTH_STRING): its UI asks for it
// on its sign-in page, as a person does, and keeps it in the browser context's local storage for both UIs.
export async function signInToPrefect(page, ui, credential = process.env.PREFECT_API_AUTH_STRING) {
  await page.goto(`${ui}/v2/login`);
  await page.locator("input[type=password]").fill(credential);
  await page.getByRole("button", { name: "Login" }).click();
  await page.waitForURL((url) => !url.pathname.endsWith("/login"), { timeout: 30000 });
}

// The header a script's own calls to Prefect's API send.
export function prefectAuthorization(credential = process.env.PREFECT_API_AUTH_STRING) {
  return { Authorization: `Basic ${Buffer.from(credential).toString("base64")}` };
}

// A run's report on its page in Prefect's UI: its Artifacts tab, then the report's card.
export async function openReport(page, ui, runId, processId) {
  await page.goto(`${ui}/runs/flow-run/${runId}`);
  await page.getByText("Artifacts", { exact: true }).first().click({ timeout: 30000 });
  await page.getByText(`${processId}-results`, { exact: true }).click({ timeout: 30000 });
}

// Click what `click` clicks and give what the browser downloaded (in this tab or one the link opened).
export async function downloaded(context, click) {
  const seen = new Promise((resolve) => {
    const watch = (page) => page.on("download", resolve);
    context.pages().forEach(watch);
    context.on("page", watch);
  });
  await click();
  const download = await Promise.race([seen, new Promise((_, reject) =>
    setTimeout(() => reject(new Error("nothing was downloaded within 30 s")), 30000))]);
  const bytes = readFileSync(await download.path());
  return { url: download.url(), name: download.suggestedFilename(), size: bytes.length,
    head: bytes.subarray(0, 4).toString("hex") };
}

// The first link to one of the job's outputs whose path matches RESULT_PATTERN.
export async function resultLink(page, resultPattern) {
  const anchors = page.locator("a[href*='/outputs/']");
  await anchors.first().waitFor({ timeout: 30000 });
  const paths = await anchors.evaluateAll((all) => all.map((a) => new URL(a.href).pathname));
  const index = paths.findIndex((path) => new RegExp(resultPattern).test(path));
  if (index < 0) throw new Error(`no result link matches ${resultPattern}: ${paths.join(", ")}`);
  return anchors.nth(index);
}

