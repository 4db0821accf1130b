// The chat page of chat-gateway: sign in with a token, run agents, watch every event of every run as it arrives,
// cancel a run, and survive a dropped connection by resuming the session (crates/chat-gateway/README.md, "Sessions
// that survive the network", "What a client must do"). No framework, no build step, nothing from another host.
'use strict';

(() => {
  /** Reconnection backoff: 0.5 s doubling up to 10 s, with +-20% jitter. */
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 10000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    state: document.querySelector('.state'),
    status: $('status'),
    user: $('user'),
    session: $('session'),
    sessionId: $('session-id'),
    lastSeq: $('last-seq'),
    signOut: $('sign-out'),
    login: $('login'),
    loginForm: $('login-form'),
    token: $('token'),
    useDevToken: $('use-dev-token'),
    notices: $('notices'),
    chat: $('chat'),
    composer: $('composer'),
    agent: $('agent'),
    input: $('input'),
    send: $('send'),
    runs: $('runs'),
    noRuns: $('no-runs'),
    events: $('events'),
    earlier: $('earlier'),
  };

  const state = {
    token: null,
    /** The session's id once the server has sent its `session` frame. */
    sessionId: null,
    /** The seq of the last message processed: a resume asks for everything after it. */
    lastSeq: 0,
    /** After a 409 resume_gap: the first seq the log still had (the messages before it are lost). */
    gapFrom: null,
    gapTo: null,
    ws: null,
    /** Whether the current socket reached `open` (a refused handshake never does). */
    opened: false,
    /** Whether the current socket has had its `session` frame: the page is `connected`. */
    live: false,
    attempt: 0,
    timer: null,
    /** Bumped whenever the page stops or restarts connecting, so that late callbacks of an older try do nothing. */
    generation: 0,
    leaving: false,
    /** request_id -> run, in the order they were sent. */
    runs: new Map(),
    /** run_id -> run. */
    runsById: new Map(),
    /** request_id of a cancel -> run. */
    cancels: new Map(),
    /** "run_id call_id" -> the tool_executing element, to pair it with its tool_completed. */
    toolCalls: new Map(),
    counter: 0,
  };

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('data-')) node.setAttribute(key, String(value));
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function randomHex(bytes) {
    const values = new Uint8Array(bytes);
    crypto.getRandomValues(values);
    return Array.from(values, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  const pageId = randomHex(4);
  function newRequestId(prefix) {
    state.counter += 1;
    return `${prefix}${state.counter}-${pageId}`;
  }

  function quote(value) {
    return JSON.stringify(value === undefined ? '' : value);
  }

  function setStatus(text, kind) {
    ui.status.textContent = text;
    ui.state.dataset.state = kind;
  }

  /** A notice above the chat: `kind` is info, warn or error. Errors and warnings stay until dismissed. */
  function notice(kind, text) {
    const close = el('button', { type: 'button', class: 'quiet dismiss', 'aria-label': 'Dismiss' }, '\u00d7');
    const item = el('div', { class: `notice ${kind}`, role: kind === 'info' ? 'status' : 'alert', 'data-kind': kind },
      el('span', { text }), close);
    close.addEventListener('click', () => item.remove());
    ui.notices.append(item);
    return item;
  }

  function clearNotices() {
    ui.notices.replaceChildren();
  }

  function authHeaders() {
    return { Authorization: `Bearer ${state.token}` };
  }

  function showSession() {
    ui.session.hidden = !state.sessionId;
    ui.sessionId.textContent = state.sessionId ? state.sessionId.slice(0, 8) : '';
    ui.sessionId.title = state.sessionId || '';
    ui.lastSeq.textContent = String(state.lastSeq);
  }

  // ---------------------------------------------------------------- signing in

  async function signIn(rawToken) {
    const token = (rawToken || '').trim();
    if (!token) {
      notice('error', 'Paste a token first.');
      return;
    }
    state.token = token;
    state.generation += 1;
    const generation = state.generation;
    clearNotices();
    setStatus('checking the token', 'connecting');
    let response;
    try {
      response = await fetch('/v1/ws/check', { headers: authHeaders(), cache: 'no-store' });
    } catch (err) {
      setStatus('offline', 'offline');
      notice('error', `Cannot reach the gateway: ${err.message}.`);
      return;
    }
    if (generation !== state.generation) return;
    if (response.status === 401) {
      tokenRefused((await response.text()).trim());
      return;
    }
    if (!response.ok) {
      setStatus('offline', 'offline');
      notice('error', `The gateway answered ${response.status}: ${(await response.text()).trim()}`);
      return;
    }
    const { user } = await response.json();
    ui.user.textContent = `signed in as ${user}`;
    ui.user.hidden = false;
    await loadAgents();
    if (generation !== state.generation) return;
    ui.login.hidden = true;
    ui.chat.hidden = false;
    ui.signOut.hidden = false;
    ui.token.value = '';
    state.attempt = 0;
    connect();
  }

  function tokenRefused(why) {
    stopConnecting();
    setStatus('signed out', 'offline');
    ui.login.hidden = false;
    ui.user.hidden = true;
    const reason = why ? `: ${why}` : '';
    notice('error', `The gateway refused this token${reason}. Paste a valid token to sign in` +
      (state.sessionId ? ' and resume the session.' : '.'));
    ui.token.focus();
  }

  async function loadAgents() {
    let names = [];
    try {
      const response = await fetch('/v1/agents', { headers: authHeaders(), cache: 'no-store' });
      if (response.ok) names = (await response.json()).agents || [];
    } catch (err) {
      notice('warn', `Cannot load the agent list: ${err.message}`);
    }
    const previous = ui.agent.value;
    ui.agent.replaceChildren(...names.map((name) => el('option', { value: name, text: name })));
    if (names.includes(previous)) ui.agent.value = previous;
    else if (names.includes('echo')) ui.agent.value = 'echo';
  }

  // ---------------------------------------------------------------- the connection

  function stopConnecting() {
    state.generation += 1;
    clearTimeout(state.timer);
    state.timer = null;
    const ws = state.ws;
    state.ws = null;
    state.live = false;
    if (ws) ws.close();
  }

  function connect() {
    clearTimeout(state.timer);
    state.timer = null;
    const params = new URLSearchParams({ token: state.token });
    if (state.sessionId) {
      params.set('session', state.sessionId);
      params.set('after', String(state.lastSeq));
    }
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws?${params}`);
    state.ws = ws;
    state.opened = false;
    state.live = false;
    setStatus(state.sessionId ? 'resuming' : 'connecting', 'connecting');
    ws.addEventListener('open', () => {
      if (ws === state.ws) state.opened = true;
    });
    ws.addEventListener('message', (event) => {
      if (ws === state.ws) onFrame(event.data);
    });
    ws.addEventListener('close', (event) => {
      if (ws === state.ws) onClose(event);
    });
  }

  function onClose(event) {
    const opened = state.opened;
    state.ws = null;
    state.live = false;
    setComposerLive();
    if (state.leaving) return;
    if (event.code === 4000) {
      setStatus('disconnected: resumed elsewhere', 'offline');
      const item = notice('warn', 'This session was resumed in another tab or window, so this page let go of it. ');
      const again = el('button', { type: 'button' }, 'Take it back');
      again.addEventListener('click', () => {
        item.remove();
        state.attempt = 0;
        connect();
      });
      item.firstChild.append(again);
      return;
    }
    if (event.code === 4001) {
      setStatus('disconnected: token expired', 'offline');
      ui.login.hidden = false;
      notice('warn', 'Your token expired. Paste a fresh one to resume the session: its runs go on meanwhile, ' +
        'for the server\'s resume window (30 s by default).');
      ui.token.focus();
      return;
    }
    if (!opened) {
      // The handshake was refused, or the gateway is unreachable; a browser cannot read the status, so ask.
      probe();
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect(why) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(state.attempt, 10));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    state.attempt += 1;
    const reason = why ? `${why}; ` : '';
    setStatus(`${reason}reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${state.attempt})`, 'connecting');
    clearTimeout(state.timer);
    state.timer = setTimeout(connect, delay);
  }

  /** After a failed handshake: 401 bad token, 404 session gone, 409 replay gap, anything else: try again later. */
  async function probe() {
    const generation = state.generation;
    const params = new URLSearchParams();
    if (state.sessionId) {
      params.set('session', state.sessionId);
      params.set('after', String(state.lastSeq));
    }
    let response;
    try {
      response = await fetch(`/v1/ws/check?${params}`, { headers: authHeaders(), cache: 'no-store' });
    } catch {
      if (generation === state.generation) scheduleReconnect('gateway unreachable');
      return;
    }
    if (generation !== state.generation) return;
    if (response.status === 401) {
      tokenRefused((await response.text()).trim());
      return;
    }
    // A first retry comes at once; if the same answer comes again, the backoff applies.
    const soon = () => (state.attempt < 2 ? (state.attempt += 1, connect()) : scheduleReconnect());
    if (response.status === 404 && state.sessionId) {
      sessionGone();
      soon();
      return;
    }
    if (response.status === 409) {
      const body = await response.json().catch(() => ({}));
      if (Number.isInteger(body.first_seq) && body.first_seq > 0) {
        markGap(body.first_seq);
        soon();
        return;
      }
    }
    if (response.status === 503) {
      scheduleReconnect('the gateway is shutting down');
      return;
    }
    scheduleReconnect();
  }

  /** The session is gone from the server (expired, or the server restarted): the next connection opens a new one. */
  function sessionGone() {
    const old = state.sessionId;
    const count = ui.events.children.length;
    if (count > 0) {
      const list = el('ol', { class: 'events' });
      list.append(...ui.events.children);
      ui.earlier.prepend(el('details', { class: 'earlier' },
        el('summary', { text: `Earlier session ${old.slice(0, 8)}: ${count} events, gone from the server` }), list));
    }
    for (const run of state.runs.values()) {
      if (['queued', 'sent', 'running'].includes(run.state)) {
        setRunState(run, 'lost', 'lost with its session; send it again');
      }
    }
    state.runsById.clear();
    state.toolCalls.clear();
    state.sessionId = null;
    state.lastSeq = 0;
    state.gapFrom = state.gapTo = null;
    showSession();
    notice('warn', `The session ${old.slice(0, 8)} is gone from the server (it expired or the server restarted), ` +
      'so this page opened a new one. Runs that were in progress there are lost.');
  }

  /** The replay log no longer holds the messages before `firstSeq`: resume from there and mark the hole. */
  function markGap(firstSeq) {
    state.gapFrom = state.lastSeq + 1;
    state.gapTo = firstSeq - 1;
    state.lastSeq = firstSeq - 1;
    notice('warn', `The server no longer had messages ${state.gapFrom} to ${state.gapTo} of this session: ` +
      'they are lost to this page (marked in the timeline).');
  }

  // ---------------------------------------------------------------- messages from the server

  function onFrame(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      notice('error', 'The gateway sent a frame that is not JSON; it was ignored.');
      return;
    }
    if (message.type === 'session') {
      onSession(message);
      return;
    }
    if (!Number.isInteger(message.seq)) return;
    // Already processed (a resume from further back than the last seq replays it): drop it.
    if (message.seq <= state.lastSeq) return;
    if (message.seq !== state.lastSeq + 1) {
      // The server never skips a seq; if it did, show it rather than hide it.
      state.gapFrom = state.lastSeq + 1;
      state.gapTo = message.seq - 1;
    }
    state.lastSeq = message.seq;
    renderEvent(message);
    applyToRun(message);
    showSession();
  }

  function onSession(message) {
    if (!message.resumed) {
      state.sessionId = message.session_id;
      state.lastSeq = 0;
    }
    state.live = true;
    state.attempt = 0;
    setStatus('connected', 'connected');
    showSession();
    setComposerLive();
    // Every run not acknowledged yet goes (again) with its request_id: one that had arrived answers
    // duplicate_request and is not started twice; one lost with the connection starts now.
    for (const run of state.runs.values()) {
      if (run.state === 'queued' || run.state === 'sent') sendRun(run);
      else if (run.state === 'running' && run.cancelWanted && !run.cancelSent) sendCancel(run);
    }
  }

  function send(message) {
    if (!state.live || !state.ws) return false;
    state.ws.send(JSON.stringify(message));
    return true;
  }

  function renderEvent(message) {
    const detail = eventDetail(message);
    const item = el('li', {
      class: `event t-${message.type}`,
      'data-seq': message.seq,
      'data-type': message.type,
      'data-run': message.run_id || undefined,
      'data-request': message.request_id || undefined,
    },
    el('span', { class: 'seq', text: `#${message.seq}` }),
    el('span', { class: 'type', text: message.type }),
    el('span', { class: 'ref', text: message.run_id || '' }),
    el('span', { class: 'detail', text: detail }));
    if (message.type === 'error') {
      item.dataset.code = message.code;
      if (message.code === 'duplicate_request') item.classList.add('ack');
    }
    if (message.type === 'agent_completed') item.dataset.outcome = message.outcome;
    if (message.type === 'tool_executing' || message.type === 'tool_completed') {
      item.dataset.call = message.call_id;
      const key = `${message.run_id} ${message.call_id}`;
      if (message.type === 'tool_executing') {
        state.toolCalls.set(key, item);
      } else {
        const executing = state.toolCalls.get(key);
        if (executing) {
          executing.dataset.pairedSeq = String(message.seq);
          item.dataset.pairedSeq = executing.dataset.seq;
          executing.classList.add('paired');
          executing.querySelector('.detail').append(el('span', { class: 'pair', text: ` \u2192 #${message.seq}` }));
          item.querySelector('.detail').append(el('span', { class: 'pair', text: ` (call #${executing.dataset.seq})` }));
          state.toolCalls.delete(key);
        }
      }
    }
    if (state.gapTo !== null && state.gapTo === message.seq - 1) {
      item.dataset.gap = `messages ${state.gapFrom}\u2013${state.gapTo} lost`;
      item.classList.add('after-gap');
      state.gapFrom = state.gapTo = null;
    }
    const atBottom = ui.events.scrollHeight - ui.events.scrollTop - ui.events.clientHeight < 40;
    ui.events.append(item);
    if (atBottom) ui.events.scrollTop = ui.events.scrollHeight;
  }

  function eventDetail(m) {
    switch (m.type) {
      case 'agent_started':
        return `${m.agent}(${quote(m.input)})`;
      case 'agent_thinking':
        return m.text || '';
      case 'tool_executing':
        return `${m.call_id} ${m.tool}(${quote(m.input)})`;
      case 'tool_completed':
        return 'error' in m ? `${m.call_id} ${m.tool} failed: ${m.error}` : `${m.call_id} ${m.tool} \u2192 ${quote(m.output)}`;
      case 'agent_completed':
        if (m.outcome === 'succeeded') return `succeeded: ${quote(m.output)}`;
        if (m.outcome === 'failed') return `failed: ${m.error || ''}`;
        return m.outcome;
      case 'error':
        return `${m.code}: ${m.message}`;
      default:
        return '';
    }
  }

  // ---------------------------------------------------------------- runs

  function newRun(requestId, agent, input) {
    const card = el('li', { class: 'run', 'data-request': requestId, 'data-state': 'queued' },
      el('div', { class: 'run-head' },
        el('span', { class: 'run-id', text: '\u2026' }),
        el('strong', { text: agent }),
        el('span', { class: 'input', text: quote(input) }),
        el('span', { class: 'run-state', text: 'queued' })),
      el('div', { class: 'thinking' }),
      el('ul', { class: 'tools' }),
      el('div', { class: 'outcome', hidden: '' }));
    const run = { requestId, agent, input, state: 'queued', runId: null, card, cancel: null, cancelWanted: false, cancelSent: false };
    state.runs.set(requestId, run);
    ui.noRuns.hidden = true;
    ui.runs.prepend(card);
    return run;
  }

  function setRunState(run, runState, text) {
    run.state = runState;
    run.card.dataset.state = runState;
    run.card.querySelector('.run-state').textContent = text || runState;
    // A cancel button exists exactly while the run is running.
    if (runState === 'running' && !run.cancel) {
      const cancel = el('button', { type: 'button', class: 'cancel', 'data-testid': 'cancel' }, 'Cancel');
      cancel.addEventListener('click', () => {
        run.cancelWanted = true;
        cancel.disabled = true;
        cancel.textContent = 'Cancelling\u2026';
        sendCancel(run);
      });
      run.cancel = cancel;
      run.card.querySelector('.run-head').append(cancel);
    } else if (runState !== 'running' && run.cancel) {
      run.cancel.remove();
      run.cancel = null;
    }
  }

  function sendRun(run) {
    const message = { type: 'run', agent: run.agent, input: run.input, request_id: run.requestId };
    if (send(message)) {
      setRunState(run, 'sent', 'sent, waiting for the gateway');
    }
  }

  function sendCancel(run) {
    if (!run.runId) return;
    const requestId = newRequestId('c');
    if (send({ type: 'cancel', run_id: run.runId, request_id: requestId })) {
      run.cancelSent = true;
      state.cancels.set(requestId, run);
    }
  }

  function runStarted(run, runId) {
    run.runId = runId;
    state.runsById.set(runId, run);
    run.card.dataset.run = runId;
    run.card.querySelector('.run-id').textContent = runId;
    setRunState(run, 'running');
  }

  function applyToRun(m) {
    if (m.type === 'error') {
      const cancelled = m.request_id && state.cancels.get(m.request_id);
      if (cancelled) return; // e.g. unknown_run: the run ended before the cancel arrived.
      const run = m.request_id && state.runs.get(m.request_id);
      if (!run) {
        notice('error', `The gateway refused a message: ${m.code}: ${m.message}`);
        return;
      }
      if (m.code === 'duplicate_request') {
        // The run had arrived before a drop: acknowledged. Its events carry the request_id.
        if (!run.runId && m.run_id) runStarted(run, m.run_id);
        return;
      }
      if (run.state === 'sent' || run.state === 'queued') {
        setRunState(run, 'refused');
        showOutcome(run, 'refused', `${m.code}: ${m.message}`);
      }
      return;
    }
    let run = m.run_id && state.runsById.get(m.run_id);
    if (!run && m.run_id) {
      // Every message about a run carries its request_id, so a run whose agent_started this page never saw (lost in
      // a replay gap) is still recognised.
      run = m.request_id && state.runs.get(m.request_id);
      if (!run && m.type === 'agent_started') run = newRun(m.request_id || m.run_id, m.agent, m.input);
      if (run) runStarted(run, m.run_id);
    }
    if (!run) return;
    switch (m.type) {
      case 'agent_thinking':
        run.card.querySelector('.thinking').textContent = m.text || '';
        break;
      case 'tool_executing':
        run.card.querySelector('.tools').append(el('li', { 'data-call': m.call_id, class: 'pending' },
          el('span', { class: 'call', text: `${m.tool}(${quote(m.input)})` }),
          el('span', { class: 'result', text: '\u2026' })));
        break;
      case 'tool_completed': {
        const row = run.card.querySelector(`.tools li[data-call="${CSS.escape(m.call_id)}"]`);
        if (row) {
          row.classList.remove('pending');
          row.classList.add('error' in m ? 'failed' : 'done');
          row.querySelector('.result').textContent = 'error' in m ? `failed: ${m.error}` : `\u2192 ${quote(m.output)}`;
        }
        break;
      }
      case 'agent_completed':
        setRunState(run, m.outcome);
        run.card.querySelector('.thinking').textContent = '';
        showOutcome(run, m.outcome, m.outcome === 'succeeded' ? m.output : m.outcome === 'failed' ? m.error : '');
        break;
      default:
        break;
    }
  }

  function showOutcome(run, outcome, text) {
    const box = run.card.querySelector('.outcome');
    box.hidden = false;
    box.dataset.outcome = outcome;
    box.textContent = text ? `${outcome}: ${text}` : outcome;
  }

  function setComposerLive() {
    ui.send.textContent = state.live ? 'Send' : 'Queue';
    ui.send.title = state.live ? '' : 'Offline: the run is sent when the page reconnects';
  }

  // ---------------------------------------------------------------- wiring

  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const agent = ui.agent.value;
    if (!agent) {
      notice('error', 'No agent to run: the agent list is empty.');
      return;
    }
    const run = newRun(newRequestId('r'), agent, ui.input.value);
    ui.input.value = '';
    if (state.live) sendRun(run);
    else setRunState(run, 'queued', 'queued until the page reconnects');
  });

  ui.loginForm.addEventListener('submit', (event) => {
    event.preventDefault();
    signIn(ui.token.value);
  });

  ui.signOut.addEventListener('click', () => {
    state.leaving = true;
    // Leaving for good: the session is closed at once instead of waiting for a resume.
    if (state.live) send({ type: 'close' });
    stopConnecting();
    location.replace('/');
  });

  // A token in the fragment (`/#token=...`) never reaches the server; take it, then drop it from the address bar.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fragmentToken = fragment.get('token');
  if (fragmentToken) {
    history.replaceState(null, '', location.pathname + location.search);
    signIn(fragmentToken);
  } else {
    ui.token.focus();
  }

  // Only a gateway started with `serve --dev` has this route.
  fetch('/dev-token', { cache: 'no-store' })
    .then((response) => (response.ok ? response.text() : null))
    .then((token) => {
      if (!token) return;
      ui.useDevToken.hidden = false;
      ui.useDevToken.addEventListener('click', () => signIn(token));
    })
    .catch(() => {});
})();
