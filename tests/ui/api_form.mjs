// Signs in to granary api with a token, runs a process from its HTML form, waits on the job page until the job has
// completed, and looks at its quicklook picture there and on the Prefect UI's page of the same run (its Artifacts
// tab, then the quicklook artifact's card).
// Usage: node api_form.mjs API_URL PREFECT_UI TOKEN PROCESS INPUTS_JSON SCREENSHOT_DIR
// (INPUTS_JSON maps each field's label to its value; prints one JSON document of what was seen)
import { chromium } from "playwright-core";

const [api, ui, token, processId, inputsJson, shots] = process.argv.slice(2);
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function picture(page, selector) {
  const image = page.locator(selector).first();
  await image.waitFor({ timeout: 30000 });
  await page.waitForFunction((s) => { const i = document.querySelector(s); return i && i.complete; }, selector,
    { timeout: 30000 });
  return image.evaluate((i) => ({ src: i.src, alt: i.alt, width: i.naturalWidth, height: i.naturalHeight }));
}

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const outside = [];
  page.on("request", (r) => { const u = new URL(r.url()); if (!["127.0.0.1", "localhost"].includes(u.hostname)) outside.push(r.url()); });

  await page.goto(`${api}/login`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("signed in as").waitFor({ timeout: 10000 });

  await page.goto(`${api}/processes/${processId}?f=html`);
  for (const [label, value] of Object.entries(JSON.parse(inputsJson))) {
    await page.getByLabel(label, { exact: true }).fill(String(value));
  }
  await page.getByRole("button", { name: "Execute" }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]+\?f=html$/, { timeout: 30000 });
  const jobId = new URL(page.url()).pathname.split("/").pop();
  let status = "";
  for (let waited = 0; waited < 180 && !["successful", "failed", "dismissed"].includes(status); waited++) {
    await page.waitForTimeout(1000);
    await page.reload();
    status = (await page.locator("#status").textContent()).trim();
  }
  const job = { status, text: await page.locator("main").innerText(), picture: await picture(page, "img.quicklook") };
  await page.screenshot({ path: `${shots}/job.png`, fullPage: true });

  const run = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await run.goto(`${ui}/runs/flow-run/${jobId}`);
  let prefect;
  try {
    await run.getByText("Artifacts", { exact: true }).first().click({ timeout: 30000 });
    await run.getByText(`${processId}-results`, { exact: true }).click({ timeout: 30000 });  // the report's card
    prefect = { url: run.url(), picture: await picture(run, "img[alt^='quicklook of']") };
  } finally {
    await run.screenshot({ path: `${shots}/prefect-run.png`, fullPage: true });
  }
  console.log(JSON.stringify({ jobId, job, prefect, outside }));
} finally {
  await browser.close();
}
