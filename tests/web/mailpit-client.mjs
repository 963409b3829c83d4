// Drives a running GopherPost with mailpit-api, a real Mailpit client from
// npm that nobody here wrote.  Usage: node mailpit-client.mjs BASE_URL
// Expects two messages to be there already (subjects "client one" and
// "client two", sent over SMTP by the trial test).  Prints one JSON line of
// facts; exits 1 with the reason on the first surprise.
import assert from "node:assert/strict";
import { MailpitClient } from "mailpit-api";

const base = process.argv[2];
const mailpit = new MailpitClient(base);
const facts = {};

try {
  const list = await mailpit.listMessages();
  assert.equal(list.total, 2, "listMessages total");
  assert.deepEqual(list.messages.map((m) => m.Subject), ["client two", "client one"]);
  facts.listed = list.messages.length;

  const latest = await mailpit.getMessageSummary();
  assert.equal(latest.Subject, "client two");
  assert.match(latest.Text, /second body/);
  assert.equal(latest.From.Address, "tester@client.test");
  facts.latest = latest.ID;

  const one = await mailpit.getMessageSummary(list.messages[1].ID);
  assert.equal(one.Subject, "client one");
  const headers = await mailpit.getMessageHeaders(one.ID);
  assert.deepEqual(headers.Subject, ["client one"]);
  const source = await mailpit.getMessageSource(one.ID);
  assert.match(source, /first body/);

  const found = await mailpit.searchMessages({ query: 'subject:"client one"' });
  assert.equal(found.messages_count, 1);
  assert.equal(found.messages[0].ID, one.ID);
  const none = await mailpit.searchMessages({ query: "-client" });
  assert.equal(none.messages_count, 0);

  await mailpit.setReadStatus({ IDs: [one.ID], Read: false });
  const unread = await mailpit.searchMessages({ query: "is:unread" });
  assert.deepEqual(unread.messages.map((m) => m.ID), [one.ID]);

  await mailpit.setTags({ IDs: [one.ID], Tags: ["from-node"] });
  assert.deepEqual(await mailpit.getTags(), ["from-node"]);

  const sent = await mailpit.sendMessage({
    From: { Email: "api@client.test", Name: "API" },
    To: [{ Email: "someone@gopherpost.test" }],
    Subject: "sent by mailpit-api",
    Text: "text part",
    HTML: "<p>html part</p>",
    Attachments: [{ Content: Buffer.from("hello attachment").toString("base64"), Filename: "hello.txt" }],
  });
  assert.ok(sent.ID, "sendMessage returns an ID");
  const arrived = await mailpit.waitForMessage({ query: "subject:mailpit-api" }, { timeout: 20000, interval: 100 });
  assert.equal(arrived.ID, sent.ID);
  assert.equal(arrived.Attachments[0].FileName, "hello.txt");
  const blob = await mailpit.getMessageAttachment(arrived.ID, arrived.Attachments[0].PartID);
  assert.equal(await blob.text(), "hello attachment");
  assert.match(await mailpit.renderMessageHTML(arrived.ID), /html part/);
  assert.match(await mailpit.renderMessageText(arrived.ID), /text part/);
  facts.sent = sent.ID;

  const info = await mailpit.getInfo();
  assert.equal(info.Messages, 3);
  const config = await mailpit.getConfiguration();
  assert.equal(typeof config.MessageRelay.Enabled, "boolean");

  await mailpit.deleteMessages({ IDs: [one.ID] });
  await mailpit.deleteMessagesBySearch({ query: "subject:mailpit-api" });
  const left = await mailpit.listMessages();
  assert.deepEqual(left.messages.map((m) => m.Subject), ["client two"]);
  await mailpit.deleteMessages();
  const empty = await mailpit.waitForMessages({ count: 0 }, { timeout: 5000, interval: 100 });
  assert.equal(empty.total, 0);
  facts.deleted = true;
  console.log(JSON.stringify(facts));
} catch (error) {
  console.error("mailpit-api: " + (error && error.stack ? error.stack : error));
  process.exit(1);
}
