// GopherPost's web UI in Debian's headless Chromium, driven by Playwright.
// Usage: node browser.mjs BASE_URL SMTP_PORT RECORDER_URL
//
// The trial test has sent, over SMTP, a plain message ("hello browser") and
// a hostile HTML message ("hostile html").  RECORDER_URL is a loopback HTTP
// server of the test: it counts requests for /pixel.png (the remote image of
// the hostile message), and /restart restarts GopherPost's web listener.
// Prints one JSON line of what it saw; exits 1 on the first surprise.
import assert from "node:assert/strict";
import net from "node:net";
import { chromium } from "playwright-core";

const [base, smtpPort, recorder] = process.argv.slice(2);
const facts = {};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function recorderCount() {
  const response = await fetch(recorder + "/count");
  return Number(await response.text());
}

// A tiny SMTP client: one message, commands one at a time.
function sendSMTP(subject, body) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(smtpPort), "127.0.0.1");
    const script = [
      "EHLO browser.test",
      "MAIL FROM:<browser@client.test>",
      "RCPT TO:<bob@gopherpost.test>",
      "DATA",
      `From: browser@client.test\r\nTo: bob@gopherpost.test\r\nSubject: ${subject}\r\n\r\n${body}\r\n.`,
      "QUIT",
    ];
    let buffer = "";
    socket.setTimeout(20000, () => reject(new Error("SMTP timeout")));
    socket.on("error", reject);
    socket.on("data", (data) => {
      buffer += data.toString();
      const lines = buffer.split("\r\n");
      buffer = lines.pop();
      for (const line of lines) {
        if (line[3] === "-") continue;
        if (!/^[23]/.test(line)) { reject(new Error("SMTP: " + line)); socket.destroy(); return; }
        const next = script.shift();
        if (next === undefined) { socket.end(); resolve(); return; }
        socket.write(next + "\r\n");
      }
    });
  });
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  await page.goto(base + "/");

  // The list shows the messages sent with smtplib.
  const rows = page.locator("#messages li");
  await rows.filter({ hasText: "hello browser" }).first().waitFor({ timeout: 15000 });
  await rows.filter({ hasText: "hostile html" }).first().waitFor({ timeout: 15000 });
  facts.listed = await rows.count();
  await page.locator("#live.on").waitFor({ timeout: 15000 });

  // Clicking shows the text...
  await rows.filter({ hasText: "hello browser" }).first().click();
  await page.locator("#subject", { hasText: "hello browser" }).waitFor();
  await page.locator('#tabs button[data-tab="text"]').click();
  await page.locator("#text", { hasText: "plain text body" }).waitFor();
  facts.text = true;

  // ... and the HTML, in a frame sandboxed without scripts or our origin.
  await rows.filter({ hasText: "hostile html" }).first().click();
  await page.locator("#subject", { hasText: "hostile html" }).waitFor();
  await page.locator('#tabs button[data-tab="html"]').click();
  const sandbox = await page.locator("#html-frame").getAttribute("sandbox");
  assert.ok(!sandbox.includes("allow-scripts"), sandbox);
  assert.ok(!sandbox.includes("allow-same-origin"), sandbox);
  const frame = page.frameLocator("#html-frame");
  await frame.locator("#greeting", { hasText: "Hello from HTML" }).waitFor({ timeout: 15000 });
  // What the script, the onerror handler and the javascript: link would
  // have changed is unchanged.
  const target = await frame.locator("#target").textContent();
  assert.equal(target, "untouched", "a script ran in the message");
  const link = frame.locator("#jslink");
  assert.equal(await link.getAttribute("href"), null, "javascript: link kept its href");
  assert.equal(await link.getAttribute("target"), "_blank");
  assert.equal(await link.getAttribute("rel"), "noopener noreferrer");
  await link.click();
  await sleep(300);
  assert.equal(await frame.locator("#target").textContent(), "untouched");
  assert.equal(await page.title(), "GopherPost", "the page title changed");
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  const external = frame.locator("#external");
  assert.equal(await external.getAttribute("rel"), "noopener noreferrer");
  facts.scriptsBlocked = true;

  // Remote images are not fetched until asked.
  await sleep(1000);
  assert.equal(await recorderCount(), 0, "the remote image was fetched before asking");
  await page.locator("#images-bar").waitFor();
  await page.locator("#load-images").click();
  for (let i = 0; i < 100 && (await recorderCount()) === 0; i++) await sleep(100);
  facts.imagesAfterAsking = await recorderCount();
  assert.ok(facts.imagesAfterAsking >= 1, "the remote image was not fetched after asking");
  assert.equal(await frame.locator("#target").textContent(), "untouched");

  // A message sent while the page is open appears without reload.
  await sendSMTP("arrived live", "while you were looking");
  await rows.filter({ hasText: "arrived live" }).first().waitFor({ timeout: 10000 });
  facts.live = true;

  // After the server's web listener restarts, the stream reconnects.
  await fetch(recorder + "/restart");
  await page.locator("#live:not(.on)").waitFor({ timeout: 10000 }).catch(() => {});
  await page.locator("#live.on").waitFor({ timeout: 20000 });
  await sendSMTP("after restart", "reconnected");
  await rows.filter({ hasText: "after restart" }).first().waitFor({ timeout: 15000 });
  facts.reconnected = true;

  // On a phone: one pane at a time.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  await small.goto(base + "/");
  const smallRows = small.locator("#messages li");
  await smallRows.filter({ hasText: "hello browser" }).first().tap();
  await small.locator("#subject", { hasText: "hello browser" }).waitFor();
  assert.equal(await small.locator("#list-pane").isVisible(), false);
  await small.locator("#back").tap();
  assert.equal(await small.locator("#list-pane").isVisible(), true);
  facts.phone = true;

  assert.deepEqual(pageErrors, [], "errors in the page");
  console.log(JSON.stringify(facts));
} catch (error) {
  console.error("browser: " + (error && error.stack ? error.stack : error));
  process.exitCode = 1;
} finally {
  await browser.close();
}
