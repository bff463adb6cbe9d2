// The console in a real browser: Debian's headless Chromium driven by
// playwright-core, every page checked with axe-core (no serious or
// critical violation) at 1280 and 360 px wide, and shot at both widths.
// Run by tests/console.rs, which starts the server and reads the JSON this
// prints on its last line (the secrets the pages showed, so that the
// harness can check none reaches a log).
//
// Env: LK_URL, LK_ROOT_KEY, LK_ORG, LK_ADMIN_EMAIL, LK_ADMIN_PASSWORD,
// LK_MEMBER_EMAIL, LK_MEMBER_PASSWORD, LK_OTHER_KEY_ID (a key of another
// organization), LK_SHOTS (screenshot folder), LK_CHROMIUM.
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const URL_ = env("LK_URL");
const ROOT = env("LK_ROOT_KEY");
const ORG = env("LK_ORG");
const SHOTS = env("LK_SHOTS");
mkdirSync(SHOTS, { recursive: true });

const out = { secrets: [], shots: [], pages_checked: 0, checks: [] };
const failures = [];
function check(cond, what) {
  out.checks.push(what);
  if (!cond) failures.push(what);
}

const browser = await chromium.launch({
  executablePath: process.env.LK_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: URL_ });
  const page = await context.newPage();
  page.on("console", (m) => {
    const t = m.text();
    if (/Content[- ]Security[- ]Policy|Refused to (apply|execute|load)/i.test(t)) {
      failures.push(`CSP violation on ${page.url()}: ${t}`);
    }
  });
  page.on("pageerror", (e) => failures.push(`script error on ${page.url()}: ${e.message}`));
  return page;
}

// axe at this width; only serious and critical violations fail.
async function axe(page, name) {
  await page.evaluate(AXE);
  const r = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    await axe.run(document, { resultTypes: ["violations"] }));
  for (const v of r.violations) {
    if (v.impact === "serious" || v.impact === "critical") {
      const where = v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ");
      failures.push(`axe ${v.impact} on ${name}: ${v.id} (${v.help}) at ${where}`);
    }
  }
}

// Shoots the page at 1280 and 360 px (full page) and runs axe at both.
async function shoot(page, name) {
  out.pages_checked += 1;
  await page.evaluate(() => document.activeElement?.blur?.());
  await axe(page, `${name} @1280`);
  const wide = `${SHOTS}/${name}-1280.png`;
  await page.screenshot({ path: wide, fullPage: true });
  await page.setViewportSize({ width: 360, height: 780 });
  await axe(page, `${name} @360`);
  const narrow = `${SHOTS}/${name}-360.png`;
  await page.screenshot({ path: narrow, fullPage: true });
  // No page scrolls sideways at 360 px: wide tables scroll in their own box.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `${name}: no horizontal scroll at 360 px (overflow ${overflow}px)`);
  await page.setViewportSize({ width: 1280, height: 800 });
  out.shots.push(wide, narrow);
}

async function verify(credential, scopes) {
  const r = await fetch(`${URL_}/v1/verify`, {
    method: "POST",
    headers: { authorization: `Bearer ${ROOT}`, "content-type": "application/json" },
    body: JSON.stringify({ credential, environment: "test", required_scopes: scopes }),
  });
  return r.json();
}

async function signIn(page, email, password) {
  await page.goto(`${URL_}/console`);
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/console\/orgs\/org_[A-Za-z0-9]+\/keys$/);
}

const org = `${URL_}/console/orgs/${ORG}`;
const tab = (p, name) => p.getByRole("navigation", { name: "Organization" }).getByRole("link", { name });

// ---- An admin -----------------------------------------------------------
const page = await newPage();
await page.goto(`${URL_}/console`);
check(/\/console\/sign-in/.test(page.url()), "signed out: /console shows the sign-in page");
await shoot(page, "sign-in");

// A wrong password is refused on the page.
await page.getByLabel("Email", { exact: true }).fill(env("LK_ADMIN_EMAIL"));
await page.getByLabel("Password", { exact: true }).fill("not the password");
await page.getByRole("button", { name: "Sign in", exact: true }).click();
check(await page.getByRole("alert").textContent().then((t) => /incorrect/.test(t)),
  "a wrong password says so");

await signIn(page, env("LK_ADMIN_EMAIL"), env("LK_ADMIN_PASSWORD"));
check(await page.getByText("No API keys yet.").isVisible(), "an empty organization says what to do");
// Keyboard: the first Tab reaches the skip link, the next ones the header
// and the tabs, in reading order; focus is visible.
await page.keyboard.press("Tab");
check(await page.evaluate(() => document.activeElement?.classList.contains("skip")),
  "the first Tab stop is the skip link");
const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
check(outline !== "none", `focus is visible (outline ${outline})`);
const stops = [];
for (let i = 0; i < 12; i++) {
  await page.keyboard.press("Tab");
  stops.push(await page.evaluate(() => document.activeElement?.textContent?.trim() || document.activeElement?.id));
}
for (const want of ["API keys", "OAuth apps", "API logs", "Members", "Create key", "Search"]) {
  check(stops.includes(want), `Tab reaches ${want} (stops: ${stops.join(" | ")})`);
}
await shoot(page, "keys-empty");

// Create a key: name, kind, scopes from the catalog, expiry, limits.
await page.getByRole("link", { name: "Create your first key" }).click();
await page.waitForURL(/\/keys\/new$/);
await shoot(page, "key-new");
await page.getByLabel("Name", { exact: true }).fill("Billing worker (test)");
await page.getByLabel(/^test/).check();
await page.getByLabel("documents.read").check();
await page.getByLabel("Expires", { exact: true }).selectOption("90");
await page.getByText("Limits (optional)").click();
await page.getByLabel("Requests").fill("100");
await page.getByRole("button", { name: "Create key" }).click();
await page.waitForSelector("#secret");
const key = await page.inputValue("#secret");
out.secrets.push(key);
check(/^sk_test_[0-9A-Za-z]{44}$/.test(key), "the new key is shown");
check(await page.getByText("It will not be shown again").isVisible(), "the page warns the key is shown once");
await page.getByRole("button", { name: "Copy" }).click();
await page.waitForFunction(() => /Copied/.test(document.getElementById("copy-status").textContent));
const clip = await page.evaluate(() => navigator.clipboard.readText());
check(clip === key, "the copy button puts the key on the clipboard");
await shoot(page, "key-created");

// The key works.
let v = await verify(key, ["documents.read"]);
check(v.valid === true, `the new key verifies (${v.code})`);
v = await verify(key, ["documents.write"]);
check(v.code === "INSUFFICIENT_SCOPE", `a scope it lacks is refused (${v.code})`);

// Its page, then revoke it with a reason.
await page.getByRole("link", { name: "I have saved it" }).click();
await page.waitForURL(/\/keys\/key_[A-Za-z0-9]+$/);
const keyUrl = page.url();
const keyId = keyUrl.split("/").pop();
check(!(await page.content()).includes(key), "the key's page does not show the secret again");
await shoot(page, "key");
await page.getByRole("link", { name: "Revoke" }).click();
await page.waitForURL(/\/revoke$/);
await shoot(page, "key-revoke");
await page.getByLabel(/Reason/).fill("Rotated out by the browser test");
await page.getByRole("button", { name: "Revoke key" }).click();
await page.waitForURL(/done=revoked/);
check(await page.getByText("The key was revoked.").isVisible(), "revoking says it is done");
check(await page.getByText("Rotated out by the browser test").isVisible(), "the reason is kept");
v = await verify(key, ["documents.read"]);
check(v.code === "KEY_REVOKED", `the revoked key is refused (${v.code})`);

// The refused call in API Logs (the log is written within a second or so)
// and in the chart.
await page.getByRole("link", { name: "View logs" }).click();
let found = false;
for (let i = 0; i < 20 && !found; i++) {
  await page.waitForTimeout(500);
  await page.reload();
  found = await page.locator("table.list td .badge", { hasText: "KEY_REVOKED" }).count() > 0;
}
check(found, "the refused call is in API Logs");
check(await page.locator(".legend li", { hasText: "KEY_REVOKED" }).count() === 1, "the chart's legend has KEY_REVOKED");
check(await page.locator("svg.chart-svg rect title", { hasText: "KEY_REVOKED" }).count() >= 1,
  "the chart has a KEY_REVOKED bar");
check(await page.locator("table.list td .badge", { hasText: "INSUFFICIENT_SCOPE" }).count() >= 1,
  "the refused scope is in API Logs too");
await shoot(page, "logs");
// Filter by outcome.
await page.goto(`${org}/logs?code=VALID&key_id=${keyId}`);
check(await page.locator("table.list td .badge", { hasText: "KEY_REVOKED" }).count() === 0,
  "the outcome filter leaves other codes out");
check(await page.locator("table.list td .badge", { hasText: "VALID" }).count() >= 1, "VALID entries are listed");

// OAuth apps: register one (confidential, HS256 client JWTs).
await tab(page, "OAuth apps").click();
await page.waitForURL(/\/apps$/);
check(await page.getByText("No OAuth apps yet.").isVisible(), "no apps yet says what to do");
await shoot(page, "apps-empty");
await page.getByRole("link", { name: "Register your first app" }).click();
await page.getByLabel("Name", { exact: true }).fill("Docs sync app");
await page.getByLabel("Redirect URIs").fill("https://sync.example.com/oauth/callback");
await page.getByLabel("documents.read").check();
await page.getByLabel("Client-signed JWTs").selectOption("HS256");
await shoot(page, "app-new");
await page.getByRole("button", { name: "Register app" }).click();
await page.waitForSelector("#secret");
const secret = await page.inputValue("#secret");
out.secrets.push(secret);
check(/^lk_cs_/.test(secret), "the client secret is shown once");
await shoot(page, "app-created");
await page.getByRole("link", { name: "Done" }).click();
await page.waitForURL(/\/apps\/cli_[A-Za-z0-9]+$/);
check(!(await page.content()).includes(secret), "the app's page does not show the secret again");
check(await page.getByText("No user has authorized this app yet.").isVisible(), "no consents yet");
await shoot(page, "app");
await tab(page, "OAuth apps").click();
check(await page.getByRole("link", { name: "Docs sync app" }).isVisible(), "the app is listed");
await shoot(page, "apps");

// Members: add the member the test signs in as, add and remove another.
await tab(page, "Members").click();
await page.waitForURL(/\/members$/);
for (const [email, password, role] of [
  [env("LK_MEMBER_EMAIL"), env("LK_MEMBER_PASSWORD"), "member"],
  ["temp.contractor@example.com", "temporary password 1", "admin"],
]) {
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("First password").fill(password);
  await page.getByLabel("Role").selectOption(role);
  await page.getByRole("button", { name: "Add member" }).click();
  await page.waitForURL(/done=added/);
  check(await page.getByRole("cell", { name: email, exact: true }).isVisible(), `${email} is listed`);
}
await shoot(page, "members");
await page.getByRole("link", { name: "Remove temp.contractor@example.com" }).click();
await page.waitForURL(/\/remove$/);
await shoot(page, "member-remove");
await page.getByRole("button", { name: "Remove member" }).click();
await page.waitForURL(/done=removed/);
check(await page.getByRole("cell", { name: "temp.contractor@example.com", exact: true }).count() === 0, "the removed member is gone");

// A second key, then search for it; htmx swaps the results in place and
// nothing above them moves.
await page.goto(`${org}/keys/new`);
await page.getByLabel("Name", { exact: true }).fill("Reporting export");
await page.getByLabel(/^test/).check();
await page.getByLabel("documents.read").check();
await page.getByRole("button", { name: "Create key" }).click();
await page.waitForSelector("#secret");
out.secrets.push(await page.inputValue("#secret"));
await page.goto(`${org}/keys`);
check(await page.locator("table.list tbody tr").count() === 2, "both keys are listed");
await shoot(page, "keys");
const before = await page.locator("#q").boundingBox();
const tableBefore = await page.locator("table.list").boundingBox();
await page.locator("#q").fill("repor");
await page.waitForFunction(() => document.querySelectorAll("table.list tbody tr").length === 1);
const after = await page.locator("#q").boundingBox();
check(before.y === after.y && before.x === after.x, "the search box does not move when results are swapped");
const tableAfter = await page.locator("table.list").boundingBox();
check(tableAfter.y === tableBefore.y, `the table starts where it did before the swap (${tableBefore.y} -> ${tableAfter.y})`);
check(await page.getByRole("link", { name: "Reporting export" }).isVisible(), "search finds by name prefix");
check(/q=repor/.test(page.url()), "the search is in the address (back and reload work)");
await shoot(page, "keys-search");
await page.locator("#q").fill("zzz-nothing");
await page.waitForSelector("text=No key matches.");
check(true, "a search without results says so");

// A link to the console from another site (the API's docs): the
// SameSite=Strict cookie is held back on that navigation, and the console
// still opens signed in.
await page.goto("about:blank");
await page.setContent(`<a id="go" href="${org}/logs">Your API logs</a>`);
await page.click("#go");
// The first answer may be the page that loads itself again from here.
const opened = await tab(page, "API logs").waitFor({ timeout: 10000 }).then(() => true, () => false);
check(opened && /\/logs$/.test(page.url()), `a link from another site opens the console signed in (${page.url()})`);

// Sign out: the session ends.
await page.getByRole("button", { name: "Sign out" }).click();
await page.waitForURL(/sign-in/);
await page.goto(`${org}/keys`);
check(/sign-in/.test(page.url()), "after sign-out the pages ask to sign in");

// ---- A member -----------------------------------------------------------
const m = await newPage();
await signIn(m, env("LK_MEMBER_EMAIL"), env("LK_MEMBER_PASSWORD"));
check(await m.getByRole("link", { name: "Create key" }).isVisible(), "a member may create keys");
check(await m.getByText("Member", { exact: true }).first().isVisible(), "the header shows the role");
await m.goto(`${org}/keys/new`);
await m.getByLabel("Name", { exact: true }).fill("Member's own key");
await m.getByLabel(/^test/).check();
await m.getByLabel("documents.read").check();
await m.getByRole("button", { name: "Create key" }).click();
await m.waitForSelector("#secret");
const memberKey = await m.inputValue("#secret");
out.secrets.push(memberKey);
await m.getByRole("link", { name: "I have saved it" }).click();
check(await m.getByRole("link", { name: "Revoke" }).isVisible(), "a member may revoke its own key");
// Another's key: no revoke, no rotate, and a note saying why.
await m.goto(`${org}/keys`);
await m.getByRole("link", { name: "Reporting export" }).click();
await m.waitForURL(/\/keys\/key_[A-Za-z0-9]+$/);
const othersKey = m.url();
check(await m.getByRole("link", { name: "Revoke" }).count() === 0, "no Revoke on another's key");
check(await m.getByText("Only an admin, or the member who created this key").isVisible(), "the page says who may revoke");
await shoot(m, "key-member-view");
// Admin pages and actions are refused, not only hidden.
await m.goto(`${org}/apps`);
check(await m.getByRole("link", { name: "Register app" }).count() === 0, "no Register app for a member");
const r1 = await m.goto(`${org}/apps/new`);
check(r1.status() === 403, `a member opening Register app gets 403 (${r1.status()})`);
await shoot(m, "forbidden");
await m.goto(`${org}/keys`);
const csrf = await m.locator("input[name=csrf]").first().inputValue();
const tries = [
  [`${org}/members`, { csrf, email: "intruder@example.com", password: "long enough pw", role: "admin" }],
  [`${org}/apps`, { csrf, name: "Rogue", redirect_uris: "https://rogue.example.com/cb", grant_types: "authorization_code" }],
  [`${othersKey}/rotate`, { csrf, grace_period: "0" }],
  [`${othersKey}/revoke`, { csrf, reason: "not mine" }],
];
for (const [url, form] of tries) {
  const r = await m.request.post(url, { form, maxRedirects: 0 });
  check(r.status() === 403, `a member POSTing ${url.replace(URL_, "")} gets 403 (${r.status()})`);
}
// Another organization's key, through this organization's pages: 404.
const r2 = await m.goto(`${org}/keys/${env("LK_OTHER_KEY_ID")}`);
check(r2.status() === 404, `another organization's key is not found (${r2.status()})`);
const r3 = await m.request.post(`${org}/keys/${env("LK_OTHER_KEY_ID")}/revoke`, { form: { csrf }, maxRedirects: 0 });
check(r3.status() === 404, `revoking another organization's key is not found (${r3.status()})`);

await browser.close();
out.failures = failures;
console.log(JSON.stringify(out));
process.exit(failures.length ? 1 : 0);
