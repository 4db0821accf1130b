// One case of the chat page's browser tests, in headless Debian Chromium driven by playwright-core.
//
// Started by tests/gateway_browser.rs, which runs the real gateway behind a TCP proxy it controls. Environment:
//   CASE        the case to run (see CASES below)
//   BASE_URL    the page's address, through the proxy (http://127.0.0.1:<port>)
//   TOKENS      JSON object of tokens: {"alice": "...", "bob": "...", "expired": "..."}
//   CHROMIUM    the browser to drive (/usr/bin/chromium); nothing here downloads one
//   SCREENSHOT  where the `cancel` case saves a screenshot taken in the middle of a run (optional)
// Proxy control: this script prints `PROXY <command>` on stdout and reads one answer line (`OK ...` or `ERR ...`)
// on stdin. The last line is `PASS <case>`; any failure exits with status 1 and says why.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const STEP_MS = 20000;
const { CASE, BASE_URL, CHROMIUM, SCREENSHOT } = process.env;
const TOKENS = JSON.parse(process.env.TOKENS || '{}');

// ------------------------------------------------------------------ the proxy, through the Rust test

const answers = [];
const waiting = [];
createInterface({ input: process.stdin }).on('line', (line) => {
  const resolve = waiting.shift();
  if (resolve) resolve(line);
  else answers.push(line);
});

function proxy(command) {
  process.stdout.write(`PROXY ${command}\n`);
  return new Promise((resolve, reject) => {
    const done = (line) => (line.startsWith('OK') ? resolve(line.slice(2).trim()) : reject(new Error(`proxy ${command}: ${line}`)));
    if (answers.length) done(answers.shift());
    else waiting.push(done);
  });
}

// ------------------------------------------------------------------ helpers

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function checkEqual(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`check failed: ${message}\n  expected ${e}\n  actual   ${a}`);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** A new browser context and page, with every console error, CSP violation and request recorded. */
async function openPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const record = { requests: [], problems: [], sockets: [] };
  page.on('request', (request) => record.requests.push(request.url()));
  page.on('websocket', (ws) => record.sockets.push(ws.url()));
  page.on('pageerror', (err) => record.problems.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    const text = message.text();
    // Expected errors: /dev-token is 404 without --dev; a refused or cut WebSocket, and the page's questions to
    // /v1/ws/check after one (401, 404, 409, or no answer while the proxy refuses), are what the cases provoke.
    const { pathname } = new URL(message.location().url || BASE_URL);
    const expected = text.startsWith('WebSocket connection to')
      || (text.startsWith('Failed to load resource') && ['/dev-token', '/v1/ws/check'].includes(pathname));
    if (message.type() === 'error' && !expected) record.problems.push(`console error: ${text} (${pathname})`);
    if (/Content Security Policy/i.test(text)) record.problems.push(`CSP violation: ${text}`);
  });
  return { context, page, record };
}

/** What every page must show at the end: nothing blocked by the CSP, no script error, no request elsewhere. */
function checkClean(record) {
  checkEqual(record.problems, [], 'no console error, page error or CSP violation');
  for (const url of [...record.requests, ...record.sockets]) {
    const { host } = new URL(url);
    check(host === new URL(BASE_URL).host, `request to another host: ${url}`);
  }
  for (const url of record.requests) {
    check(!url.includes('token='), `a page request carries the token in its URL: ${url}`);
  }
}

async function waitConnected(page) {
  await page.waitForFunction(() => document.querySelector('[data-testid=status]').textContent === 'connected');
}

async function statusText(page) {
  return page.getByTestId('status').textContent();
}

async function signInByFragment(browser, token) {
  const opened = await openPage(browser);
  await opened.page.goto(`${BASE_URL}/#token=${token}`);
  await waitConnected(opened.page);
  checkEqual(new URL(opened.page.url()).hash, '', 'the token is dropped from the address bar');
  return opened;
}

async function sendRun(page, agent, input) {
  await page.getByTestId('agent').selectOption(agent);
  await page.getByTestId('input').fill(input);
  await page.getByTestId('send').click();
}

/** Every event in the timeline, oldest first, as the page shows it. */
async function events(page) {
  return page.$$eval('[data-testid=events] > *', (items) => items.map((item) => ({
    seq: Number(item.dataset.seq),
    type: item.dataset.type,
    run: item.dataset.run || null,
    request: item.dataset.request || null,
    call: item.dataset.call || null,
    pairedSeq: item.dataset.pairedSeq ? Number(item.dataset.pairedSeq) : null,
    code: item.dataset.code || null,
    outcome: item.dataset.outcome || null,
    gap: item.dataset.gap || null,
    text: item.textContent,
  })));
}

async function waitForEvents(page, predicate, what) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const list = await events(page);
    if (predicate(list)) return list;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(list.map((e) => [e.seq, e.type]))}`);
    // Wait for the next change of the timeline rather than polling blindly.
    await page.waitForFunction((count) => document.querySelector('[data-testid=events]').children.length !== count,
      list.length, { timeout: Math.max(1, deadline - Date.now()) }).catch(() => {});
  }
}

const completed = (list) => list.filter((e) => e.type === 'agent_completed');

/** Every seq exactly once, in order, with no gap, from `first`; one agent_started and one agent_completed per run. */
function checkTimeline(list, first = 1) {
  checkEqual(list.map((e) => e.seq), range(first, first + list.length - 1), 'seqs in order, each once, no gap');
  const runs = new Set(list.filter((e) => e.run).map((e) => e.run));
  for (const run of runs) {
    const own = list.filter((e) => e.run === run && e.type !== 'error');
    if (first === 1) checkEqual(own[0].type, 'agent_started', `${run} starts with agent_started`);
    checkEqual(own.filter((e) => e.type === 'agent_completed').length, 1, `${run} has one agent_completed`);
    checkEqual(own[own.length - 1].type, 'agent_completed', `${run} ends with agent_completed`);
    const started = own.filter((e) => e.type === 'agent_started').length;
    check(first === 1 ? started === 1 : started <= 1, `${run} started once`);
  }
  return runs;
}

const TOOLS_TYPES = ['agent_started', 'agent_thinking', 'tool_executing', 'tool_completed', 'tool_executing',
  'tool_completed', 'agent_thinking', 'agent_completed'];

function checkToolPairs(list) {
  for (const call of list.filter((e) => e.type === 'tool_executing')) {
    const result = list.find((e) => e.seq === call.pairedSeq);
    check(result, `tool call #${call.seq} is paired with its result`);
    checkEqual([result.type, result.run, result.call, result.pairedSeq], ['tool_completed', call.run, call.call, call.seq],
      `tool call #${call.seq} paired with the tool_completed of the same call`);
    check(result.seq > call.seq, 'a result comes after its call');
  }
}

// ------------------------------------------------------------------ the cases

const CASES = {
  /** Log in through the fragment, run `tools`, see its events in order with gap-free seq. */
  async tools(browser) {
    const { page, record } = await signInByFragment(browser, TOKENS.alice);
    check(await page.getByText('signed in as alice').isVisible(), 'the page says who is signed in');
    const agents = await page.$$eval('[data-testid=agent] option', (options) => options.map((o) => o.value));
    checkEqual(agents, ['echo', 'fail', 'panic', 'slow', 'tools'], 'the agent list comes from the gateway');
    check(await page.locator('#use-dev-token').isHidden(), 'no dev token without --dev');
    await sendRun(page, 'tools', 'hello world');
    const list = await waitForEvents(page, (l) => completed(l).length === 1, 'the run to complete');
    checkEqual(list.map((e) => e.type), TOOLS_TYPES, 'the tools agent\'s events, in order');
    checkTimeline(list);
    checkToolPairs(list);
    checkEqual(list[7].outcome, 'succeeded', 'the outcome');
    const card = page.locator('.run').first();
    checkEqual(await card.locator('.outcome').textContent(), 'succeeded: 2 words; reversed: dlrow olleh', 'the outcome in the run');
    checkEqual(await card.locator('.tools li').allTextContents(), ['word_count("hello world")\u2192 "2"', 'reverse("hello world")\u2192 "dlrow olleh"'], 'tool calls with their results');
    checkEqual(await page.getByTestId('cancel').count(), 0, 'no cancel button once the run ended');
    checkEqual(await page.locator('#last-seq').textContent(), '8', 'the page shows the last seq');
    // A second run continues the numbering.
    await sendRun(page, 'echo', 'again');
    const more = await waitForEvents(page, (l) => completed(l).length === 2, 'the second run');
    checkTimeline(more);
    checkClean(record);
  },

  /** Two pages as two users see only their own events. */
  async two_users(browser) {
    const alice = await signInByFragment(browser, TOKENS.alice);
    const bob = await signInByFragment(browser, TOKENS.bob);
    await sendRun(alice.page, 'slow', '30');
    await sendRun(bob.page, 'tools', 'bob words only');
    await sendRun(alice.page, 'tools', 'alice words only');
    await sendRun(bob.page, 'echo', 'bob again');
    const aliceList = await waitForEvents(alice.page, (l) => completed(l).length === 2, 'alice\'s runs');
    const bobList = await waitForEvents(bob.page, (l) => completed(l).length === 2, 'bob\'s runs');
    for (const [name, other, list, opened] of [['alice', 'bob', aliceList, alice], ['bob', 'alice', bobList, bob]]) {
      checkTimeline(list);
      check(list.every((e) => !e.text.includes(other)), `${name} sees nothing of ${other}'s runs`);
      const requests = await opened.page.$$eval('.run', (cards) => cards.map((c) => c.dataset.request));
      check(list.every((e) => requests.includes(e.request)), `every event ${name} sees answers one of ${name}'s requests`);
      checkClean(opened.record);
    }
    checkEqual(aliceList.filter((e) => e.type === 'agent_thinking').length, 30 + 2, 'alice: 30 steps and 2 tools thoughts');
    const ids = [await alice.page.locator('#session-id').getAttribute('title'), await bob.page.locator('#session-id').getAttribute('title')];
    check(ids[0] && ids[1] && ids[0] !== ids[1], `two sessions: ${ids}`);
  },

  /** Cancel a `slow` run; the screenshot of the README is taken in the middle of it. */
  async cancel(browser) {
    const { page, record } = await signInByFragment(browser, TOKENS.alice);
    await sendRun(page, 'tools', 'hello world');
    await waitForEvents(page, (l) => completed(l).length === 1, 'the tools run');
    await sendRun(page, 'slow', '100000');
    const running = await waitForEvents(page, (l) => l.filter((e) => e.type === 'agent_thinking').length >= 2 + 3, 'three steps of the slow run');
    const slowRun = running.find((e) => e.type === 'agent_started' && e.text.includes('slow')).run;
    checkEqual(await page.getByTestId('cancel').count(), 1, 'one cancel button: one run is running');
    await page.getByTestId('input').fill('what is the weather');
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT });
    await page.getByTestId('cancel').click();
    const list = await waitForEvents(page, (l) => completed(l).length === 2, 'the cancelled run to end');
    checkTimeline(list);
    const end = list.find((e) => e.type === 'agent_completed' && e.run === slowRun);
    checkEqual(end.outcome, 'cancelled', 'the slow run was cancelled');
    check(list.filter((e) => e.run === slowRun).length < 1000, 'cancelled long before its 100000 steps');
    checkEqual(await page.getByTestId('cancel').count(), 0, 'no cancel button once it ended');
    checkEqual(await page.locator(`.run[data-run="${slowRun}"]`).getAttribute('data-state'), 'cancelled', 'the run shows it');
    checkClean(record);
  },

  /**
   * Cut the connection mid-run: the page reconnects with backoff, resumes, re-sends what was not acknowledged, and
   * ends with every seq exactly once and one agent_completed per run.
   */
  async resume(browser) {
    const { page, record } = await signInByFragment(browser, TOKENS.alice);
    const session = await page.locator('#session-id').getAttribute('title');
    await sendRun(page, 'slow', '150');
    await waitForEvents(page, (l) => l.length >= 4, 'the slow run under way');

    // 1. A drop mid-run, and no way back for a while: the page retries with backoff.
    await proxy('block');
    await proxy('cut');
    await page.waitForFunction(() => document.querySelector('[data-testid=status]').textContent !== 'connected');
    // Sent while offline: queued, sent after the resume (it never reached the server).
    await sendRun(page, 'echo', 'sent while offline');
    checkEqual(await page.locator('.run[data-state=queued]').count(), 1, 'the offline run waits');
    await proxy('wait-refused 2');
    await page.waitForFunction(() => /reconnecting in [0-9.]+ s \(attempt \d+\)$/.test(document.querySelector('[data-testid=status]').textContent));
    await proxy('unblock');
    await waitConnected(page);
    await waitForEvents(page, (l) => completed(l).length === 2, 'the slow run and the offline run');

    // 2. A run that reached the server whose answers were lost with the connection: re-sent with the same
    // request_id, the gateway answers duplicate_request and does not start it twice.
    await proxy('freeze');
    await sendRun(page, 'tools', 'lost answers');
    await proxy('wait-dropped agent_completed');
    await proxy('cut');
    const list = await waitForEvents(page, (l) => completed(l).length === 3 && l.some((e) => e.code === 'duplicate_request'), 'the tools run, replayed, and the duplicate_request');
    await waitConnected(page);

    const runs = checkTimeline(list);
    checkEqual(runs.size, 3, 'three runs, each started once');
    checkEqual(list.filter((e) => e.type === 'agent_started').length, 3, 'three agent_started');
    checkEqual(list.filter((e) => e.code === 'duplicate_request').length, 1, 'one duplicate_request');
    checkEqual(list.filter((e) => e.gap).length, 0, 'no gap');
    checkEqual(list.filter((e) => e.type === 'agent_thinking' && /step \d+\/150/.test(e.text)).length, 150, 'all 150 steps, once each');
    checkEqual(await page.locator('#session-id').getAttribute('title'), session, 'still the same session');
    checkEqual(await page.$$eval('.run', (cards) => cards.map((c) => c.dataset.state)), ['succeeded', 'succeeded', 'succeeded'], 'every run succeeded');
    const resumes = record.sockets.filter((url) => url.includes(`session=${session}`));
    check(resumes.length >= 3, `resumed with the session id (${record.sockets.length} sockets)`);
    checkClean(record);
  },

  /** A replay log that lost messages (409 resume_gap): the page resumes from first_seq - 1 and marks the gap. */
  async gap(browser) {
    const { page, record } = await signInByFragment(browser, TOKENS.alice);
    await proxy('freeze');
    await sendRun(page, 'tools', 'hello world');
    await proxy('wait-dropped agent_completed');
    await proxy('cut');
    const list = await waitForEvents(page, (l) => completed(l).length === 1, 'the replayed end of the run');
    await waitConnected(page);
    // The gateway runs with --replay-limit 4: of the run's 8 messages, 5 to 8 were kept.
    checkEqual(list.slice(0, 4).map((e) => [e.seq, e.type]), [[5, 'tool_executing'], [6, 'tool_completed'], [7, 'agent_thinking'], [8, 'agent_completed']], 'the messages the log kept');
    checkEqual(list[0].gap, 'messages 1\u20134 lost', 'the gap is marked');
    checkTimeline(list, 5);
    check(await page.getByText('no longer had messages 1 to 4').isVisible(), 'a notice says what was lost');
    checkEqual(await page.locator('.run').first().getAttribute('data-state'), 'succeeded', 'the run still ends');
    checkClean(record);
  },

  /** The gateway restarts: the session is gone (404), and the page opens a new one with a notice. */
  async restart(browser) {
    const { page, record } = await signInByFragment(browser, TOKENS.alice);
    const before = await page.locator('#session-id').getAttribute('title');
    await sendRun(page, 'tools', 'before the restart');
    await waitForEvents(page, (l) => completed(l).length === 1, 'the first run');
    await proxy('restart-gateway');
    await page.getByText('is gone from the server').waitFor();
    await waitConnected(page);
    const after = await page.locator('#session-id').getAttribute('title');
    check(after && after !== before, 'a new session');
    checkEqual(await events(page), [], 'the new session\'s timeline starts empty');
    check(await page.getByText('Earlier session').isVisible(), 'the old events are kept apart');
    await sendRun(page, 'echo', 'after the restart');
    const list = await waitForEvents(page, (l) => completed(l).length === 1, 'a run in the new session');
    checkTimeline(list);
    checkClean(record);
  },

  /** A bad token shows a clear message; the paste box signs in. */
  async bad_token(browser) {
    const { page, record } = await openPage(browser);
    await page.goto(`${BASE_URL}/#token=not-a-token`);
    await page.getByRole('alert').filter({ hasText: 'refused this token' }).waitFor();
    const alert = await page.getByRole('alert').textContent();
    check(alert.includes('The gateway refused this token: malformed token'), `the message: ${alert}`);
    checkEqual(await statusText(page), 'signed out', 'status');
    check(await page.locator('#chat').isHidden(), 'no chat without a valid token');
    check(await page.locator('#token').isVisible(), 'the paste box is offered');

    await page.locator('#token').fill(TOKENS.expired);
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByRole('alert').filter({ hasText: 'token expired' }).waitFor();

    await page.locator('#token').fill(`  ${TOKENS.alice}\n`);
    await page.getByRole('button', { name: 'Connect' }).click();
    await waitConnected(page);
    await sendRun(page, 'echo', 'pasted');
    checkTimeline(await waitForEvents(page, (l) => completed(l).length === 1, 'a run'));
    check(record.sockets.length === 1, `no WebSocket before a token was accepted: ${record.sockets.length}`);
    checkClean(record);
  },

  /** With serve --dev, the page offers the dev token. */
  async dev(browser) {
    const { page, record } = await openPage(browser);
    await page.goto(`${BASE_URL}/`);
    await page.getByRole('button', { name: 'Use the dev token' }).click();
    await waitConnected(page);
    check(await page.getByText('signed in as dev').isVisible(), 'signed in as dev');
    await sendRun(page, 'echo', 'hi');
    checkTimeline(await waitForEvents(page, (l) => completed(l).length === 1, 'a run'));
    checkClean(record);
  },
};

// ------------------------------------------------------------------ main

async function main() {
  const run = CASES[CASE];
  if (!run) throw new Error(`unknown CASE ${CASE}; cases: ${Object.keys(CASES).join(', ')}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: STEP_MS,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
  process.stdout.write(`PASS ${CASE}\n`);
}

main().then(() => process.exit(0), (err) => {
  process.stdout.write(`FAIL ${CASE}: ${err.stack || err}\n`);
  process.exit(1);
});
