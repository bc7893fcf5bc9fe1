// The control panel in a real headless Chromium (Debian's), driven by
// playwright-core. Started by tests/tests/e2e/panel.rs, which runs Kumo with a
// real agent and TCG guests and passes:
//   KUMO_URL, KUMO_ADMIN_USER, KUMO_ADMIN_PASSWORD, KUMO_MEMBER_USER,
//   KUMO_MEMBER_PASSWORD, KUMO_SCREENSHOTS (a directory), KUMO_IMAGE (image name).
// Prints `INSTANCE <id>` for every instance it launches (for cleanup) and exits
// non-zero on the first failed step.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const URL = env("KUMO_URL");
const SHOTS = env("KUMO_SCREENSHOTS");
const IMAGE = env("KUMO_IMAGE");
mkdirSync(SHOTS, { recursive: true });

const step = (msg) => console.log(`[panel] ${new Date().toISOString()} ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}
const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

// Playwright's launch gives Chromium a fresh temporary --user-data-dir.
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
  ],
});

async function login(context, user, password) {
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  await page.goto(`${URL}/`);
  check(page.url().endsWith("/ui/login"), `/ redirects to the login form, got ${page.url()}`);
  await page.fill('input[name="username"]', user);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  check(page.url().endsWith("/ui/"), `login lands on the dashboard, got ${page.url()}`);
  await page.waitForSelector("text=Dashboard");
  return page;
}

/** Counts main-frame navigations, to prove a page updated without reloading. */
function navigations(page) {
  let n = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) n += 1;
  });
  return () => n;
}

let failed = false;
try {
  // ------------------------------------------------------------ admin
  const admin = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  let page = await login(admin, env("KUMO_ADMIN_USER"), env("KUMO_ADMIN_PASSWORD"));
  const cookies = await admin.cookies();
  const session = cookies.find((c) => c.name === "kumo_session");
  check(session && session.httpOnly && session.sameSite === "Strict", `session cookie is HttpOnly, SameSite=Strict: ${JSON.stringify(session)}`);
  check(!(await page.evaluate(() => document.cookie)).includes("kumo_session"), "scripts cannot read the session cookie");
  await shot(page, "dashboard");
  step("logged in as admin");

  // Launch form: live price, then a name the API refuses.
  await page.goto(`${URL}/ui/instances/new`);
  await page.selectOption('select[name="flavor"]', "mini");
  await page.waitForFunction(() => /per hour/.test(document.getElementById("estimate").textContent), null, { timeout: 15000 });
  const price = await page.textContent("#estimate");
  step(`price estimate shown: ${price}`);
  await page.fill('input[name="name"]', "panel-");
  await page.selectOption('select[name="image"]', { label: `${IMAGE} (public)` });
  await page.fill('textarea[name="user_data"]', "#!/bin/sh\necho kept-input");
  await Promise.all([page.waitForNavigation(), page.click('#launch-form button[type="submit"]')]);
  const error = await page.textContent(".error");
  check(/invalid/.test(error), `the API's message is shown: ${error}`);
  check((await page.inputValue('input[name="name"]')) === "panel-", "the name is kept");
  check((await page.inputValue('textarea[name="user_data"]')).includes("kept-input"), "the user data is kept");
  check((await page.inputValue('select[name="flavor"]')) === "mini", "the flavor is kept");
  await shot(page, "launch-error");
  step(`bad input refused with: ${error.trim()}`);

  // Launch for real, and watch it run without reloading.
  await page.fill('input[name="name"]', "panel1");
  await Promise.all([page.waitForNavigation(), page.click('#launch-form button[type="submit"]')]);
  const match = page.url().match(/\/ui\/instances\/(i-[0-9a-f]+)$/);
  check(match, `launch lands on the instance page, got ${page.url()}`);
  const id = match[1];
  console.log(`INSTANCE ${id}`);
  let navs = navigations(page);
  const initial = await page.textContent("#state");
  check(initial !== "running", `the page was rendered before the guest ran (state ${initial})`);
  step(`launched ${id}, state ${initial}`);
  await page.waitForFunction(() => document.getElementById("state").textContent === "running", null, { timeout: 240000 });
  check(navs() === 0, `the state changed to running without a reload (${navs()} navigations)`);
  step("state reached running without reloading");
  await page.waitForFunction(() => document.getElementById("console").textContent.includes("KUMO-READY"), null, { timeout: 240000 });
  const consoleText = await page.textContent("#console");
  check(consoleText.includes(`KUMO-READY instance-id=${id}`), "the console shows the guest's marker");
  check(navs() === 0, "the console filled in without a reload");
  await shot(page, "instance");
  step("console shows KUMO-READY");

  // Graphs of the guest's measured activity appear and are redrawn without a reload.
  check((await page.locator("#graphs svg.graph").count()) === 3, "the instance page draws CPU, disk and network graphs");
  await page.waitForFunction(() => [...document.querySelectorAll("#graphs svg.graph")].some((g) => Number(g.getAttribute("data-points")) > 0 && /L/.test(g.querySelector("path.line").getAttribute("d"))), null, { timeout: 120000 });
  check(navs() === 0, "the graphs filled in without a reload");
  await page.click('.ranges a[data-range="day"]');
  await page.waitForFunction(() => document.getElementById("graphs").getAttribute("data-range") === "day" && document.querySelector("#graphs svg.graph"), null, { timeout: 20000 });
  check(navs() === 0, "switching the range redraws in place");
  await shot(page, "instance-graphs");
  step("graphs show the guest's activity");

  // A form posted without its CSRF token is refused and changes nothing.
  const refused = await page.evaluate(async (id) => {
    const r = await fetch(`/ui/instances/${id}/action`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "action=delete",
    });
    return { status: r.status, text: await r.text() };
  }, id);
  check(refused.status === 403, `a form without its CSRF token gets 403, got ${refused.status}`);
  check(refused.text.includes("CSRF"), "the 403 page says why");
  await page.reload();
  check((await page.textContent("#state")) === "running", "the instance still runs after the refused delete");
  step("form without CSRF token refused (403), instance untouched");

  // Stop (confirmation accepted), and watch the list follow without reloading.
  await Promise.all([page.waitForNavigation(), page.click('button[name="do"][value="stop"]')]);
  await page.goto(`${URL}/ui/instances`);
  navs = navigations(page);
  await page.waitForFunction((id) => document.querySelector(`[data-state-of="${id}"]`).textContent === "stopped", id, { timeout: 180000 });
  check(navs() === 0, "the list's state cell turned stopped without a reload");
  await shot(page, "instances");
  step("stopped; the list updated live");

  // Billing lists it once an hour closed (hours are seconds long in this test).
  let listed = false;
  for (let i = 0; i < 60 && !listed; i++) {
    await page.goto(`${URL}/ui/billing`);
    listed = (await page.locator("#usage").textContent()).includes(id);
    if (!listed) await page.waitForTimeout(1000);
  }
  check(listed, "the billing page lists the instance");
  check((await page.locator("svg.chart").count()) === 1, "the billing page draws its chart");
  await shot(page, "billing");
  step("billing lists the instance");

  for (const [path, name] of [["/ui/admin/hosts", "admin-hosts"], ["/ui/images", "images"], ["/ui/keypairs", "keypairs"], ["/ui/", "dashboard-after"]]) {
    const r = await page.goto(`${URL}${path}`);
    check(r.status() === 200, `${path} answers 200, got ${r.status()}`);
    if (name === "admin-hosts") {
      const load = await page.textContent("td.load");
      check(/%/.test(load) && (await page.locator("td.load svg.spark").count()) >= 1, `the hosts page shows each host's load, got ${load}`);
    }
    await shot(page, name);
  }

  // Japanese through the header's switch; live updates keep the Japanese state name.
  await page.goto(`${URL}/ui/instances`);
  await Promise.all([page.waitForNavigation(), page.click('.lang-switch a[hreflang="ja"]')]);
  check(page.url().endsWith("/ui/instances"), `the switch returns to the page, got ${page.url()}`);
  check((await page.getAttribute("html", "lang")) === "ja", "<html lang> follows the switch");
  check((await page.textContent("h1")) === "インスタンス", "the heading is Japanese");
  await page.waitForTimeout(2500); // a live refresh has run
  check((await page.textContent(`[data-state-of="${id}"]`)) === "停止", "the live state stays Japanese");
  await shot(page, "instances-ja");
  await Promise.all([page.waitForNavigation(), page.click('.lang-switch a[hreflang="en"]')]);
  check((await page.textContent("h1")) === "Instances", "back to English");
  step("Japanese locale switched on and off");

  // Log out: the session is gone.
  await Promise.all([page.waitForNavigation(), page.click("form.logout button")]);
  check(page.url().endsWith("/ui/login"), `logout lands on the login form, got ${page.url()}`);
  await page.goto(`${URL}/ui/instances`);
  check(page.url().endsWith("/ui/login"), "after logout, pages ask to log in");
  step("logged out");

  // ------------------------------------------------------------ member
  const member = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await login(member, env("KUMO_MEMBER_USER"), env("KUMO_MEMBER_PASSWORD"));
  check((await page.locator('a[href="/ui/admin/hosts"]').count()) === 0, "members see no admin menu");
  for (const path of ["/ui/admin/hosts", "/ui/admin/flavors", "/ui/admin/projects", "/ui/admin/quotas", "/ui/admin/prices"]) {
    const r = await page.goto(`${URL}${path}`);
    check(r.status() === 403, `a member gets 403 on ${path}, got ${r.status()}`);
  }
  await shot(page, "member-admin-403");
  const other = await page.goto(`${URL}/ui/instances/${id}`);
  check(other.status() === 404, `a member gets 404 on another project's instance, got ${other.status()}`);
  check(!(await page.content()).includes("panel1"), "nothing of the other project's instance shows");
  step("member refused admin pages (403) and another project's instance (404)");
  await member.close();
  await admin.close();
} catch (e) {
  failed = true;
  console.error(`[panel] FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
