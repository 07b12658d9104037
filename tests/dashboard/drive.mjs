// Drives Warden's dashboard in Debian's headless Chromium: connect with the admin token,
// check the page shows the traffic the test sent, click "Ban" on one offender, wait for
// the page to show the ban, save a screenshot. Prints what it saw as JSON.
// Usage: node drive.mjs <admin url> <admin token> <end user to ban> <screenshot path>
import puppeteer from "puppeteer-core";

const [adminUrl, token, user, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error("usage: node drive.mjs <admin url> <admin token> <end user> <screenshot path>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  // Root in a container: Chromium's sandbox needs user namespaces it may not have.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  const errors = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  await page.goto(`${adminUrl}/dashboard`, { waitUntil: "load" });
  await page.type("#token", token);
  await page.click("#connect");
  await page.waitForSelector("body[data-loaded='true']", { timeout: 15000 });
  const banSelector = `button[data-user="${user}"][data-action="ban"]`;
  await page.waitForSelector(banSelector, { timeout: 15000 });
  const seen = await page.evaluate(() => ({
    allowed: Number(document.getElementById("allowed").textContent),
    blocked: Number(document.getElementById("blocked").textContent),
    offenders: [...document.querySelectorAll("#offenders tbody tr")].map((r) => r.textContent),
    recent: document.querySelectorAll("#recent tbody tr").length,
    error: document.getElementById("error").textContent,
    hygiene: document.getElementById("hygiene-summary").textContent,
  }));
  await page.click(banSelector);
  await page.waitForSelector(`button[data-user="${user}"][data-action="unban"]`, { timeout: 15000 });
  const status = await page.$eval(`button[data-user="${user}"]`, (b) => b.closest("tr").textContent);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ...seen, after_click: status, page_errors: errors }));
} finally {
  await browser.close();
}
