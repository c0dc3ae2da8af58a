// An admin, signed in to granary api in Chromium, meets hostile content: a container's HTML, SVG and text outputs
// opened from the API, and pages of other origins (another port of the same host, and another site) that try to act
// with the admin's sign-in cookie or to frame the API's pages. Prints one JSON document of what happened.
// Usage: node hostile_pages.mjs API_URL ADMIN_TOKEN JOB_ID ATTACKER_PORT
import { launch, signIn } from "./browser.mjs";

const [api, token, jobId, attackerPort] = process.argv.slice(2);
const browser = await launch(["--host-resolver-rules=MAP evil.example 127.0.0.1"]);
const seen = { outputs: {}, attacks: {}, requests: [] };
try {
  const context = await browser.newContext({ acceptDownloads: true });
  context.on("request", (r) => seen.requests.push(`${r.method()} ${r.url()}`));
  const page = await context.newPage();
  await signIn(page, api, token);

  // The container's outputs, opened as an admin would from a result link.
  for (const name of ["report.html", "map.svg", "notes.txt"]) {
    const opened = await context.newPage();
    const download = opened.waitForEvent("download", { timeout: 5000 }).then((d) => d.suggestedFilename()).catch(() => null);
    let status = null;
    try {
      const response = await opened.goto(`${api}/jobs/${jobId}/outputs/${name}`, { timeout: 10000 });
      status = response ? response.status() : null;
    } catch (error) {
      status = String(error.message).split("\n")[0];
    }
    await opened.waitForTimeout(1500);
    seen.outputs[name] = { status, downloaded: await download, title: await opened.title().catch(() => "") };
    await opened.close();
  }

  // Pages of other origins, with the admin's cookie in the browser.
  for (const [name, origin] of [["port", `http://127.0.0.1:${attackerPort}`], ["site", `http://evil.example:${attackerPort}`]]) {
    const attacker = await context.newPage();
    await attacker.goto(`${origin}/attack.html`);
    await attacker.waitForFunction(() => window.done === true, null, { timeout: 20000 }).catch(() => null);
    const framed = attacker.frames().find((f) => f !== attacker.mainFrame());
    let frameText = "";
    try { frameText = framed ? await framed.evaluate(() => document.body ? document.body.innerText : "") : ""; } catch (error) { frameText = ""; }
    seen.attacks[name] = { said: await attacker.evaluate(() => window.said || []), frameText };
    await attacker.close();
  }
  // Still signed in as the admin (a sign-in from another site would have swapped the cookie for another's token).
  seen.stillAdmin = await page.evaluate(async (u) => (await fetch(u, { credentials: "same-origin" })).status,
    `${api}/jobs/${jobId}`);
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
