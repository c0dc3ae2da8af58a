// Presses Retry on a flow run's page in Prefect's UI, and confirms it in the dialog, as a user does.
// Usage: node retry.mjs UI_URL FLOW_RUN_ID SCREENSHOT_DIR   (prints one JSON document: the server's answer to the
// retry, and the API calls that failed)
import { launch, signInToPrefect } from "./browser.mjs";

const [ui, flowRunId, shots] = process.argv.slice(2);

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems = [];
  // API calls only: the UI also asks for an icon it does not ship (/ico/undefined.svg), beside the point here.
  page.on("response", (r) => { if (r.status() >= 400 && r.url().startsWith(`${ui}/api/`)) problems.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
  await signInToPrefect(page, ui);
  problems.length = 0;  // the sign-in page's own calls before the credential is given answer 401
  await page.goto(`${ui}/runs/flow-run/${flowRunId}`);
  await page.getByRole("button", { name: "Retry" }).first().click({ timeout: 30000 });
  const answered = page.waitForResponse((r) => r.url().endsWith(`/flow_runs/${flowRunId}/set_state`), { timeout: 15000 });
  await page.getByRole("dialog").getByRole("button", { name: "Retry" }).click({ timeout: 10000 });
  const setState = await answered;
  await page.screenshot({ path: `${shots}/retried.png`, fullPage: true });
  console.log(JSON.stringify({ status: setState.status(), body: await setState.json(), problems }));
} finally {
  await browser.close();
}
