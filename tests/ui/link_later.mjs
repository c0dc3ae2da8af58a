// Opens a run's report in Prefect's UI, as a person who may see the job would some time after it ran, and clicks its
// first result link matching RESULT_PATTERN. A link within its lifetime downloads the file at once; one past it leads
// to granary api's sign-in page first, and once signed in with TOKEN, to the file. Prints one JSON document.
// Usage: node link_later.mjs PREFECT_UI RUN_ID PROCESS RESULT_PATTERN TOKEN SCREENSHOT_DIR
import { readFileSync } from "node:fs";
import { launch, signInToPrefect, openReport, resultLink } from "./browser.mjs";

const [ui, runId, processId, resultPattern, token, shots] = process.argv.slice(2);

async function until(page, done, seconds) {
  for (let waited = 0; waited < seconds * 1000 && !done(); waited += 250) await page.waitForTimeout(250);
}

const browser = await launch();
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  let download = null;
  const watch = (tab) => tab.on("download", (d) => { download = d; });
  context.pages().forEach(watch);
  context.on("page", watch);

  await signInToPrefect(page, ui);
  await openReport(page, ui, runId, processId);
  const link = await resultLink(page, resultPattern);
  const seen = { href: await link.evaluate((a) => a.href) };
  await link.click();
  const signInTab = () => context.pages().find((tab) => new URL(tab.url()).pathname.endsWith("/login"));
  await until(page, () => download || signInTab(), 30);
  seen.askedToSignIn = !download && Boolean(signInTab());
  if (seen.askedToSignIn) {
    const asked = signInTab();
    await asked.getByLabel("API token").waitFor({ timeout: 10000 });
    await asked.screenshot({ path: `${shots}/sign-in-asked.png` });
    await asked.getByLabel("API token").fill(token);
    await asked.getByRole("button", { name: "Sign in" }).click();
    await until(page, () => download, 30);
    seen.afterSignIn = download ? null : (await asked.locator("body").innerText()).slice(0, 500);
  }
  if (download) {
    const bytes = readFileSync(await download.path());
    seen.download = { url: download.url(), size: bytes.length, head: bytes.subarray(0, 4).toString("hex") };
  }
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
