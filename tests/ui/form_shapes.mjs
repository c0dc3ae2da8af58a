// Signs in to granary api, opens the run form of a process whose arguments have every shape (tests/tasks/
// form-shapes.yaml), says what the form shows before anything is typed, fills each shape (rows added and one
// removed, a multi-select extended, a nested field, a checkbox; optional fields left empty), submits, waits on the
// job page until the job has completed, and reads back the arguments the container was given through the page's
// result link.
// Usage: node form_shapes.mjs API_URL TOKEN SCREENSHOT_DIR   (prints one JSON document of what was seen)
import { launch, signIn, executeAndWait } from "./browser.mjs";

const [api, token, shots] = process.argv.slice(2);

const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  await signIn(page, api, token);

  await page.goto(`${api}/processes/form-shapes?f=html`);
  const field = (label) => page.getByLabel(new RegExp(`^${label}( \\(optional\\))?$`));
  const selected = (label) => field(label).evaluate((s) => [...s.selectedOptions].map((o) => o.textContent));
  const shown = {
    scale: await field("Scale").inputValue(),
    note: await field("Note").inputValue(),
    label: await field("Label").inputValue(),
    method: await selected("Method"),
    classes: await selected("Classes"),
    mask: await field("Mask clouds").isChecked(),
    thresholdRows: await page.getByLabel(/^Thresholds \d+$/).count(),
  };
  await page.screenshot({ path: `${shots}/form-shapes.png`, fullPage: true });

  await field("Scale").fill("7");
  await field("Method").selectOption({ label: "cubic" });
  await field("Classes").selectOption([{ label: "water" }, { label: "field" }, { label: "forest" }]);
  for (let row = 0; row < 3; row++) await page.getByRole("button", { name: "add Thresholds" }).click();
  await page.getByLabel("Thresholds 1", { exact: true }).fill("0.1");
  await page.getByLabel("Thresholds 2", { exact: true }).fill("0.5");
  await page.getByLabel("Thresholds 3", { exact: true }).fill("0.9");
  await page.getByRole("button", { name: "remove Thresholds item" }).nth(1).click();
  await field("Width").fill("256");
  await field("Mask clouds").check();

  const { status } = await executeAndWait(page, 120);
  await page.screenshot({ path: `${shots}/form-shapes-job.png`, fullPage: true });
  const links = await page.locator("#results a").evaluateAll((all) => all.map((a) => a.href));
  const argumentsLink = links.find((href) => new URL(href).pathname.endsWith("/arguments.json"));
  const given = argumentsLink ? await (await page.request.get(argumentsLink)).json() : null;
  console.log(JSON.stringify({ shown, status, text: await page.locator("main").innerText(), links, given }));
} finally {
  await browser.close();
}
