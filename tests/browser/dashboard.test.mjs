// The dashboard in a real browser: headless Chromium (Debian's package) driven by playwright-core,
// against a stack deployed in the emulator. `localstack/browser.sh` sets the environment:
//   BATON_STACK_OUTPUTS  the stack's outputs (JSON)
//   BATON_TOKEN          a token with the baton:admin scope; BATON_USER_TOKEN one without
//   BATON_STATIC_DIR     the static build (`baton-dashboard`), served here on BATON_STATIC_PORT
//   BATON_ARTIFACTS      where screenshots go
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, mkdir } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const env = (name) => process.env[name] ?? assert.fail(`${name} is not set (run localstack/browser.sh)`);
const outputs = Object.fromEntries(
  JSON.parse(await readFile(env("BATON_STACK_OUTPUTS"), "utf8")).map((o) => [o.OutputKey, o.OutputValue]),
);
const endpoint = env("AWS_ENDPOINT_URL");
const DASHBOARD = `${endpoint}/_aws/execute-api/${outputs.HttpApiId}/$default/`;
const GRAPHQL = `${DASHBOARD}graphql`;
const TOKEN = env("BATON_TOKEN");
const USER_TOKEN = env("BATON_USER_TOKEN");
const TENANT = JSON.parse(Buffer.from(TOKEN.split(".")[1], "base64url")).tenant;
const ARTIFACTS = env("BATON_ARTIFACTS");
const run = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;
// The emulator runs every function as a local process: transitions take a moment to arrive.
const SETTLE = 30_000;

async function graphql(query, variables = {}, token = TOKEN) {
  const response = await fetch(GRAPHQL, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

const aws = (...args) => promisify(execFile)(env("AWS_CLI"), ["--endpoint-url", endpoint, ...args]);

/** An event on the stack's bus, as the tenant's upstream systems and workers send them (from a
 *  source of the tenant's own). */
async function putEvent(detailType, detail) {
  const entries = [{ EventBusName: outputs.BusName, Source: `${TENANT}.browser-test`, DetailType: detailType, Detail: JSON.stringify(detail) }];
  await aws("events", "put-events", "--entries", JSON.stringify(entries));
}

/** The lease of a running task's attempt, which its `TaskReady` carried. This test keeps no
 *  worker queue, so it reads the lease from the table. */
async function leaseOf(taskId) {
  const key = { pk: { S: `T#${TENANT}#${taskId}` }, sk: { S: "TASK" } };
  const { stdout } = await aws("dynamodb", "get-item", "--table-name", outputs.TableName,
    "--key", JSON.stringify(key), "--projection-expression", "lease", "--consistent-read");
  return JSON.parse(stdout).Item.lease.S;
}

/** A worker's answer: a `TaskResult` event, with the attempt's lease. */
async function succeed(taskId, attempt) {
  return putEvent("TaskResult", {
    tenant: TENANT,
    task_id: taskId,
    attempt,
    lease: await leaseOf(taskId),
    status: "succeeded",
    output: { answer: 42 },
    provenance: { model: "browser-model", tokens_in: 12, tokens_out: 3, worker_id: "browser-worker" },
  });
}

let browser;
before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // Without the background-networking flags Chromium keeps dialing out of this closed network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});
after(() => browser?.close());

/** A fresh page (its own storage), failing the test on any error the page throws or any
 *  resource its policy refuses. */
async function open(url = DASHBOARD) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  // Anything the page's Content-Security-Policy blocks is an error too.
  page.on("console", (m) => m.type() === "error" && /Content Security Policy/.test(m.text()) && errors.push(m.text()));
  page.checkErrors = () => assert.deepEqual(errors, []);
  await page.goto(url);
  return page;
}

async function signIn(page, token = TOKEN) {
  await page.fill("#token", token);
  await page.click("#sign-in-form button[type=submit]");
  await page.locator("#main").waitFor();
  await page.locator("#live.up").waitFor({ timeout: SETTLE });
}

async function watchProject(page, project) {
  await page.fill("input[name=project]", project);
  await page.click("text=Watch project");
  await page.locator(`.project[data-project="${project}"] .counts`).waitFor();
}

const shot = (page, name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

describe("the dashboard", () => {
  test("shows nothing without a token, and refuses a bad one", async () => {
    const page = await open();
    await page.locator("#sign-in").waitFor();
    assert.equal(await page.locator("#main").isHidden(), true);
    assert.equal(await page.locator("#tabs").isHidden(), true);
    await shot(page, "sign-in");
    await page.fill("#token", "not-a-token");
    await page.click("#sign-in-form button[type=submit]");
    await page.locator("#sign-in-error", { hasText: "UNAUTHENTICATED" }).waitFor();
    assert.equal(await page.locator("#main").isHidden(), true);
    page.checkErrors();
  });

  test("a task submitted through the API changes state in its row without a reload", async () => {
    const project = `web-${run}`;
    const page = await open();
    await signIn(page);
    await watchProject(page, project);
    await page.evaluate(() => (window.notReloaded = true));

    const { submitTask: task } = await graphql(
      `mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id status } }`,
      { input: { projectId: project, name: "render invoice", tier: "browser", input: { invoice: 1042 } } },
    );
    const row = page.locator(`tr[data-task-id="${task.id}"]`);
    await row.locator("[data-status=RUNNING]").waitFor({ timeout: SETTLE });
    await succeed(task.id, 1);
    await row.locator("[data-status=SUCCEEDED]").waitFor({ timeout: SETTLE });
    assert.equal(await page.evaluate(() => window.notReloaded), true, "the page was not reloaded");
    // The project's counts follow the same push.
    await page.locator(`.project[data-project="${project}"] [data-status=SUCCEEDED]`, { hasText: "1" }).waitFor({ timeout: SETTLE });

    // Two more, one cancelled from the API, for the screenshot's sake.
    for (const name of ["train model", "nightly export"]) {
      const { submitTask: other } = await graphql(
        `mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }`,
        { input: { projectId: project, name, tier: name === "train model" ? "gpu" : "batch", delaySeconds: 3600 } },
      );
      await page.locator(`tr[data-task-id="${other.id}"] [data-status=SCHEDULED]`).waitFor({ timeout: SETTLE });
      if (name === "nightly export") {
        await graphql(`mutation($id: ID!) { cancelTask(id: $id, reason: "not tonight") { id } }`, { id: other.id });
        await page.locator(`tr[data-task-id="${other.id}"] [data-status=CANCELLED]`).waitFor({ timeout: SETTLE });
      }
    }
    await shot(page, "tasks");

    // The filters ask the API again: by status, then by tier.
    await page.selectOption("select[name=status]", "SUCCEEDED");
    await page.locator("tbody tr").first().waitFor();
    await page.waitForFunction(() => document.querySelectorAll("tbody tr.task").length === 1);
    assert.equal(await page.locator(`tr[data-task-id="${task.id}"]`).count(), 1);
    await page.selectOption("select[name=status]", "");
    await page.fill("input[name=tier]", "gpu");
    await page.press("input[name=tier]", "Enter");
    await page.waitForFunction(() => [...document.querySelectorAll("tbody tr.task")].every((r) => r.children[2].textContent === "gpu"));

    // The task's own view: its history, provenance and output, as the worker reported them.
    await page.goto(`${DASHBOARD}#/task/${task.id}`);
    await page.locator("[data-view=task] h2", { hasText: "render invoice" }).waitFor();
    const causes = await page.locator("table.history tbody tr td.mono").allTextContents();
    assert.deepEqual(causes.slice(0, 2), ["submitted", "dispatched"]);
    assert.ok(causes.at(-1).startsWith("result"), causes.join());
    await page.locator("dd", { hasText: "browser-model" }).waitFor();
    await shot(page, "task");
    page.checkErrors();
  });

  test("pausing a project from the page shows in projectStatus, and so does resuming it", async () => {
    const project = `ops-${run}`;
    const page = await open();
    await signIn(page);
    await watchProject(page, project);
    const card = page.locator(`.project[data-project="${project}"]`);

    await card.locator("button", { hasText: "Pause" }).click();
    await page.fill("#reason", "deploy window");
    await page.click("#reason-ok");
    await page.locator(`.project[data-project="${project}"][data-paused=true]`).waitFor();
    const paused = await graphql(`query($id: String!) { projectStatus(projectId: $id) { paused pause { reason } } }`, { id: project });
    assert.deepEqual(paused.projectStatus, { paused: true, pause: { reason: "deploy window" } });
    await shot(page, "paused");

    // Enter confirms, as in any form.
    await card.locator("button", { hasText: "Resume" }).click();
    await page.fill("#reason", "window over");
    await page.press("#reason", "Enter");
    await page.locator(`.project[data-project="${project}"][data-paused=false]`).waitFor();
    const resumed = await graphql(`query($id: String!) { projectStatus(projectId: $id) { paused } }`, { id: project });
    assert.equal(resumed.projectStatus.paused, false);
    page.checkErrors();
  });

  test("the dead-letter view lists every DLQ and redrives a class, for an admin only", async () => {
    // A submission that depends on a task that does not exist: parked in the submit DLQ.
    const missing = "01a1f000-0000-7000-8000-000000000000";
    await putEvent("SubmitTask", { tenant: TENANT, project: `dlq-${run}`, name: "poison", tier: "browser", depends_on: [missing] });
    const page = await open(`${DASHBOARD}#/dlq`);
    await signIn(page);
    await page.locator("[data-view=dlq] tr[data-queue]").first().waitFor({ timeout: SETTLE });
    const queues = await page.locator("tr[data-queue]").evaluateAll((rows) => rows.map((r) => r.dataset.queue).sort());
    assert.deepEqual(queues, ["cancel", "due", "http", "result", "rollback", "submit"]);
    // The view reads the DLQs when asked (they have no subscription): until the letter is there.
    // Other tests' letters of the same class may share the DLQ: this one's row is its project's.
    const letter = page.locator('tr[data-class="SubmitTask/INVALID_DEPENDENCY"]', { hasText: `dlq-${run}` });
    for (let tries = 0; !(await letter.count()); tries++) {
      assert.ok(tries < 30, "the poison reached the submit DLQ");
      await page.waitForTimeout(2000);
      await page.click("text=Read again");
      await page.locator("[data-view=dlq] tr[data-queue]").first().waitFor();
    }
    await shot(page, "dead-letters");
    await letter.locator("button", { hasText: "Redrive" }).click();
    await page.locator(".toast", { hasText: /submit: [1-9]\d* moved back/ }).waitFor({ timeout: SETTLE });

    const user = await open(`${DASHBOARD}#/dlq`);
    await signIn(user, USER_TOKEN);
    await user.locator("[data-view=dlq] .error", { hasText: "baton:admin" }).waitFor();
    page.checkErrors();
    user.checkErrors();
  });

  test("the static build talks to the API from another origin", async () => {
    const dir = env("BATON_STATIC_DIR");
    const index = await readFile(join(dir, "index.html"));
    const server = createServer((_, response) => response.writeHead(200, { "content-type": "text/html" }).end(index));
    await new Promise((resolve) => server.listen(Number(env("BATON_STATIC_PORT")), "127.0.0.1", resolve));
    try {
      const project = `static-${run}`;
      const page = await open(`http://127.0.0.1:${env("BATON_STATIC_PORT")}/`);
      await signIn(page);
      await watchProject(page, project);
      const { submitTask: task } = await graphql(
        `mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }`,
        { input: { projectId: project, name: "from afar", tier: "browser", delaySeconds: 3600 } },
      );
      await page.locator(`tr[data-task-id="${task.id}"] [data-status=SCHEDULED]`).waitFor({ timeout: SETTLE });
      page.checkErrors();
    } finally {
      server.close();
    }
  });
});
