// Signs in to granary api with a token, runs a process from its HTML form, waits on the job page until the job has
// completed, looks at its quicklook picture there and on the Prefect UI's page of the same run (its Artifacts tab,
// then the report's card), and clicks the first result link matching RESULT_PATTERN on both pages, downloading it
// (the Prefect UI's page in a browser that never signed in to the API).
// Usage: node api_form.mjs API_URL PREFECT_UI TOKEN PROCESS INPUTS_JSON SCREENSHOT_DIR RESULT_PATTERN
// (INPUTS_JSON maps each field's label to its value; prints one JSON document of what was seen)
import { launch, signIn, signInToPrefect, executeAndWait, downloaded, resultLink, openReport } from "./browser.mjs";

const [api, ui, token, processId, inputsJson, shots, resultPattern] = process.argv.slice(2);

async function picture(page, selector) {
  const image = page.locator(selector).first();
  await image.waitFor({ timeout: 30000 });
  await page.waitForFunction((s) => { const i = document.querySelector(s); return i && i.complete; }, selector,
    { timeout: 30000 });
  return image.evaluate((i) => ({ src: i.src, alt: i.alt, width: i.naturalWidth, height: i.naturalHeight }));
}

const browser = await launch();
try {
  const signedIn = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await signedIn.newPage();
  const outside = [];
  page.on("request", (r) => { const u = new URL(r.url()); if (!["127.0.0.1", "localhost"].includes(u.hostname)) outside.push(r.url()); });

  await signIn(page, api, token);

  await page.goto(`${api}/processes/${processId}?f=html`);
  for (const [label, value] of Object.entries(JSON.parse(inputsJson))) {
    await page.getByLabel(label, { exact: true }).fill(String(value));
  }
  const { jobId, status } = await executeAndWait(page, 180);
  const job = { status, text: await page.locator("main").innerText(), picture: await picture(page, "img.quicklook") };
  await page.screenshot({ path: `${shots}/job.png`, fullPage: true });
  job.download = await downloaded(signedIn, async () => (await resultLink(page, resultPattern)).click());

  const anonymous = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const run = await anonymous.newPage();
  await signInToPrefect(run, ui);
  let prefect;
  try {
    await openReport(run, ui, jobId, processId);
    prefect = { url: run.url(), picture: await picture(run, "img[alt^='quicklook of']") };
    prefect.download = await downloaded(anonymous, async () => (await resultLink(run, resultPattern)).click());
  } finally {
    await run.screenshot({ path: `${shots}/prefect-run.png`, fullPage: true });
  }
  console.log(JSON.stringify({ jobId, job, prefect, outside }));
} finally {
  await browser.close();
}
