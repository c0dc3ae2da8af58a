// What the browser scripts share: Debian's Chromium started as every test starts it, signing in to granary api and to
// Prefect's UI, and waiting on a job's page until the job has ended.
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
