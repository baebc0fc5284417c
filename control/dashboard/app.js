// Switchyard's dashboard: the rollouts of the control API that serves this page, live.
//
// Everything shown is built with createElement and textContent, never from HTML: rollout
// names, messages and proxies' errors are data, and stay text. The page polls the API (at the
// rollout's analysis interval, 1 to 10 s) rather than holding a stream open, so that it works
// the same through a follower replica, which passes each call to the leader.
'use strict';

(() => {
  /** The API's base: the page is served at `<base>/ui/`. */
  const API = new URL('../', document.baseURI);
  const TOKEN_KEY = 'switchyard.token';
  const LIST_POLL_MS = 2000;
  const COLOURS = { baseline: '#2563eb', candidate: '#ea580c' };

  const $ = (id) => document.getElementById(id);
  const main = $('main');

  // ---- DOM -------------------------------------------------------------------------------

  /** An element with properties (`class`, `text`, `on`, `data`, attributes) and children. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'class') node.className = value;
      else if (key === 'on') for (const [event, f] of Object.entries(value)) node.addEventListener(event, f);
      else if (key === 'data') Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** A table's head: `[label, numeric?]` per column. */
  const head = (columns) => el('thead', {}, el('tr', {}, columns.map(([label, numeric]) => el('th', { class: numeric ? 'num' : '', text: label }))));

  /** Replaces `node`'s children. */
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  const badge = (text, tone) => el('span', { class: `badge ${tone}`, text });

  // ---- Words and numbers -----------------------------------------------------------------

  const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '–');
  const dateTime = (ms) => (ms ? new Date(ms).toLocaleString() : '–');
  const ago = (ms) => {
    if (!ms) return 'never';
    const s = Math.max(0, (Date.now() - ms) / 1000);
    return s < 60 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
  };
  const percent = (share) => (share === null || share === undefined ? '–' : `${(100 * share).toFixed(2)}%`);
  const ms = (v) => (v === null || v === undefined ? '–' : `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`);
  const number = (v) => (v === null || v === undefined ? '–' : Number(v.toPrecision(4)).toString());

  /** A check's value in the unit of its limit (`≤ 1.00%`, `≤ 500 ms`, a ratio). */
  function checkValue(value, limit) {
    if (value === null || value === undefined) return '–';
    // A sequential judge's value is its evidence (a likelihood ratio), whatever its confidence.
    if (/^evidence/.test(limit)) return number(value);
    if (/%/.test(limit)) return percent(value);
    if (/ms/.test(limit)) return ms(value);
    return number(value);
  }

  const PHASE_TONES = { Progressing: 'info', Paused: 'warn', Completed: 'good', Aborted: 'bad' };
  const OUTCOME_TONES = { pass: 'good', fail: 'bad', inconclusive: 'neutral' };

  /** The health badge: what the last measurement, the proxies and the phase say. */
  function health(s) {
    if (s.phase === 'Aborted') return ['aborted', 'bad'];
    if (s.degraded) return ['degraded', 'warn'];
    if (s.phase === 'Completed') return ['completed', 'good'];
    if ((s.proxies || []).some((p) => p.error)) return ['proxy failing', 'warn'];
    const outcome = s.analysis && s.analysis.outcome;
    if (outcome === 'fail') return ['failing', 'bad'];
    if (outcome === 'inconclusive') return ['inconclusive', 'neutral'];
    if (outcome === 'pass') return ['healthy', 'good'];
    return ['not measured', 'neutral'];
  }

  /** `step 2 of 5` as people count, or `all 5 steps done`. */
  const stepText = (s) => (s.step >= s.steps ? `all ${s.steps} steps done` : `step ${s.step + 1} of ${s.steps}`);
  const weightText = (s) => {
    const confirmed = s.confirmedWeight === null || s.confirmedWeight === undefined ? 'none yet' : `${s.confirmedWeight}%`;
    return `${s.weight}% (confirmed ${confirmed})`;
  };
  const rolloutLink = (name) => `#/rollouts/${encodeURIComponent(name)}`;
  const rolloutPath = (name, rest) => `rollouts/${encodeURIComponent(name)}${rest || ''}`;

  // ---- The API -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Calls the API; the parsed answer, or an ApiError with the API's own words. */
  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let answer;
    try {
      answer = await fetch(new URL(path, API), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(0, `cannot reach the control API at ${API.origin}: ${e.message}; is switchyard serve running?`);
    }
    let doc = null;
    try {
      doc = await answer.json();
    } catch (e) {
      doc = null;
    }
    if (!answer.ok) {
      const problems = doc && Array.isArray(doc.errors) ? doc.errors : [];
      const message = problems.length
        ? problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)).join('; ')
        : `the control API answered ${answer.status} ${answer.statusText}`;
      throw new ApiError(answer.status, message);
    }
    return doc;
  }

  // ---- Live --------------------------------------------------------------------------------

  let timer = null;
  let generation = 0;

  function live(ok, text) {
    const node = $('live');
    node.textContent = text;
    node.className = ok ? 'live ok' : 'live down';
  }

  /** Draws the view the address names, then again after its interval. */
  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    const where = route();
    let next = LIST_POLL_MS;
    try {
      next = where.name === undefined ? await showList(mine) : await showRollout(mine, where.name);
      if (mine === generation) live(true, `live · updated ${time(Date.now())}`);
    } catch (e) {
      if (mine !== generation) return;
      live(false, e.message);
      if (e.status === 404 && where.name !== undefined) {
        fill(main, el('section', { class: 'panel' }, el('h1', { text: where.name }), el('p', { class: 'error', text: e.message }),
          el('p', {}, el('a', { href: '#/', text: 'All rollouts' }))));
        leaveRollout();
      }
    }
    if (mine === generation) timer = setTimeout(refresh, next);
  }

  function route() {
    const m = /^#\/rollouts\/(.+)$/.exec(location.hash);
    if (!m) return {};
    try {
      return { name: decodeURIComponent(m[1]) };
    } catch (e) {
      return {};
    }
  }

  // ---- The list ----------------------------------------------------------------------------

  async function showList(mine) {
    const statuses = await api('GET', 'rollouts');
    if (mine !== generation) return LIST_POLL_MS;
    leaveRollout();
    fill($('crumb'));
    const rows = statuses.map((s) => {
      const [word, tone] = health(s);
      return el('tr', { data: { rollout: s.name } },
        el('td', {}, el('a', { href: rolloutLink(s.name), class: 'name', text: s.name })),
        el('td', { text: s.route }),
        el('td', { text: s.strategy || '–' }),
        el('td', {}, badge(s.phase, PHASE_TONES[s.phase] || 'neutral')),
        el('td', { class: 'step', text: stepText(s) }),
        el('td', { class: 'weight', text: weightText(s) }),
        el('td', {}, badge(word, tone)),
        el('td', { class: 'message', text: s.message }));
    });
    fill(main, el('section', { class: 'panel' },
      el('h1', { text: 'Rollouts' }),
      statuses.length === 0
        ? el('p', { class: 'empty', text: 'No rollouts yet: apply one with switchyard rollout apply -f FILE.' })
        : el('table', { class: 'rollouts' },
          el('thead', {}, el('tr', {}, ['Name', 'Route', 'Strategy', 'Phase', 'Step', 'Weight', 'Health', 'Message'].map((h) => el('th', { text: h })))),
          el('tbody', {}, rows))));
    return LIST_POLL_MS;
  }

  // ---- A rollout ---------------------------------------------------------------------------

  /** The rollout page on screen: its sections, charts and the series read so far. */
  let rollout = null;

  /** Lets the rollout page go, its charts' listeners with it. */
  function leaveRollout() {
    if (rollout) for (const plot of rollout.plots) plot.destroy();
    rollout = null;
  }

  const CHARTS = [
    { key: 'rps', title: 'Requests/s', value: (f) => f.rps, axis: (v) => number(v) },
    { key: 'errors', title: 'Error rate (%)', value: (f) => 100 * f.errorRate, axis: (v) => `${number(v)}%` },
    { key: 'p50', title: 'p50 latency (ms)', value: (f) => f.p50Ms, axis: (v) => number(v) },
    { key: 'p99', title: 'p99 latency (ms)', value: (f) => f.p99Ms, axis: (v) => number(v) },
  ];

  function newRolloutView(name) {
    const section = (id, title) => el('section', { class: 'panel', id }, el('h2', { text: title }), el('div', { class: 'body' }));
    const view = {
      name,
      header: el('section', { class: 'panel head', id: 'summary' }),
      actions: el('section', { class: 'panel actions', id: 'actions' }),
      steps: section('steps', 'Steps'),
      proxies: section('proxies', 'Traffic confirmed per proxy'),
      charts: el('section', { class: 'panel', id: 'charts' }, el('h2', { text: 'Per track, per measurement' }),
        el('p', { class: 'hint', id: 'charts-note' }), el('div', { class: 'charts', id: 'chart-grid', data: { points: '0' } })),
      measurement: section('measurement', 'Last measurement'),
      abort: section('abort', 'Abort record'),
      events: section('events', 'Events'),
      series: { at: [], baseline: CHARTS.map(() => []), candidate: CHARTS.map(() => []) },
      plots: [],
      names: null,
      appliedAt: null,
      since: null,
    };
    fill(main, view.header, view.steps, view.actions, view.charts, view.measurement, view.proxies, view.abort, view.events);
    return view;
  }

  async function showRollout(mine, name) {
    if (!rollout || rollout.name !== name) {
      leaveRollout();
      rollout = newRolloutView(name);
    }
    const view = rollout;
    const query = view.since === null ? '' : `?since=${view.since}`;
    const [status, history, series] = await Promise.all([
      api('GET', rolloutPath(name)),
      api('GET', rolloutPath(name, '/history')),
      api('GET', rolloutPath(name, '/measurements') + query),
    ]);
    if (mine !== generation || rollout !== view) return LIST_POLL_MS;
    fill($('crumb'), ' / ', el('span', { text: name }));
    drawSummary(view, status);
    drawActions(view, status);
    drawSteps(view, status);
    drawProxies(view, status);
    drawSeries(view, series, history);
    drawMeasurement(view, status);
    drawAbort(view, status.abort || history.abort);
    drawEvents(view, history.events);
    const interval = series.intervalMs || LIST_POLL_MS;
    return Math.min(10000, Math.max(1000, interval));
  }

  function drawSummary(view, s) {
    const [word, tone] = health(s);
    const filled = Math.max(0, Math.min(100, s.weight));
    const confirmed = Math.max(0, Math.min(100, s.confirmedWeight || 0));
    fill(view.header,
      el('div', { class: 'title' },
        el('h1', { id: 'rollout-name', text: s.name }),
        el('span', { id: 'phase' }, badge(s.phase, PHASE_TONES[s.phase] || 'neutral')),
        el('span', { id: 'health' }, badge(word, tone))),
      el('dl', { class: 'facts' },
        el('dt', { text: 'Route' }), el('dd', { text: s.route }),
        el('dt', { text: 'Strategy' }), el('dd', { text: s.strategy || '–' }),
        el('dt', { text: 'Step' }), el('dd', { id: 'step', text: stepText(s) }),
        el('dt', { text: 'Weight' }), el('dd', { id: 'weight', text: weightText(s) }),
        el('dt', { text: 'Message' }), el('dd', { id: 'message', text: s.message }),
        s.degraded ? [el('dt', { text: 'Degraded' }), el('dd', { class: 'warn-text', text: s.degraded.message })] : null),
      el('div', { class: 'weightbar', title: `candidate ${s.weight}% wanted, ${confirmed}% confirmed` },
        el('div', { class: 'wanted', data: { width: String(filled) } }),
        el('div', { class: 'confirmed', data: { width: String(confirmed) } })));
    // Widths through the CSSOM: the policy allows no style attributes.
    for (const bar of view.header.querySelectorAll('.weightbar > div')) bar.style.width = `${bar.dataset.width}%`;
  }

  const ACTIONS = [
    { verb: 'promote', label: 'Promote', path: '/promote', when: (s) => active(s),
      ask: (s) => `Promote ${s.name} past its current step (${stepText(s)})?` },
    { verb: 'promote-full', label: 'Promote full', path: '/promote?full=true', when: (s) => active(s),
      ask: (s) => `Promote ${s.name} fully? Every remaining step is skipped and the candidate gets all traffic.` },
    { verb: 'pause', label: 'Pause', path: '/pause', when: (s) => s.phase === 'Progressing',
      ask: (s) => `Pause ${s.name} where it is? The analysis goes on.` },
    { verb: 'resume', label: 'Resume', path: '/resume', when: (s) => s.phase === 'Paused',
      ask: (s) => `Resume ${s.name}?` },
    { verb: 'abort', label: 'Abort', path: '/abort', danger: true, when: (s) => active(s),
      ask: (s) => `Abort ${s.name}? Every request goes back to the baseline at once.` },
    { verb: 'retry', label: 'Retry', path: '/retry', when: (s) => s.phase === 'Aborted',
      ask: (s) => `Start ${s.name} again from its first step?` },
    { verb: 'undo', label: 'Undo', path: '/undo', when: () => true,
      ask: (s) => `Take ${s.name} back to its previous traffic and hold it there?` },
    { verb: 'weight', label: 'Set weight…', path: '/weight', weight: true, when: (s) => active(s),
      ask: (s) => `Set the candidate's weight of ${s.name} and hold it there (now ${s.weight}%).` },
  ];

  const active = (s) => s.phase === 'Progressing' || s.phase === 'Paused';

  function drawActions(view, s) {
    fill(view.actions, ACTIONS.map((a) => el('button', {
      type: 'button',
      class: a.danger ? 'danger' : '',
      data: { action: a.verb },
      disabled: !a.when(s),
      on: { click: () => confirmAction(a, s) },
      text: a.label,
    })));
  }

  function drawSteps(view, s) {
    const labels = s.stepLabels && s.stepLabels.length ? s.stepLabels : Array.from({ length: s.steps }, (_, i) => `step ${i + 1}`);
    const items = labels.map((label, i) => {
      const state = i < s.step ? 'done' : i === s.step ? (active(s) ? 'current' : 'stopped') : 'todo';
      return el('li', { class: state, data: { step: String(i + 1) } }, el('span', { class: 'n', text: String(i + 1) }), el('span', { text: label }));
    });
    fill(view.steps.querySelector('.body'), el('ol', { class: 'steps', id: 'step-list' }, items));
  }

  function drawProxies(view, s) {
    const rows = (s.proxies || []).map((p) => el('tr', {},
      el('td', { class: 'mono', text: p.url }),
      el('td', {}, p.version === null || p.version === undefined
        ? badge('not confirmed', p.error ? 'bad' : 'neutral')
        : badge(`${s.weight}% in version ${p.version}`, 'good')),
      el('td', { class: 'error-text', text: p.error || '' }),
      el('td', { text: ago(p.lastAnsweredAt) })));
    const body = view.proxies.querySelector('.body');
    const group = s.group
      ? el('p', { class: 'hint', text: `Group ${s.group.name}: ${s.group.registered} proxies registered; traffic ${s.group.tableRevision === null || s.group.tableRevision === undefined ? 'not written yet' : `written at revision ${s.group.tableRevision}`}${s.group.error ? `; ${s.group.error}` : ''}` })
      : null;
    fill(body, group, rows.length
      ? el('table', {}, el('thead', {}, el('tr', {}, ['Proxy', 'Confirmed', 'Last error', 'Last answered'].map((h) => el('th', { text: h })))), el('tbody', {}, rows))
      : el('p', { class: 'empty', text: 'No proxy yet.' }));
  }

  /** Adds the new points and redraws the charts. */
  function drawSeries(view, m, history) {
    const appliedAt = history.events.length ? history.events[0].at : null;
    if (view.appliedAt !== null && appliedAt !== view.appliedAt) {
      // Applied again: a new rollout under the same name, and a new series.
      view.series = { at: [], baseline: CHARTS.map(() => []), candidate: CHARTS.map(() => []) };
    }
    view.appliedAt = appliedAt;
    const s = view.series;
    for (const p of m.points) {
      s.at.push(p.at / 1000);
      CHARTS.forEach((c, i) => {
        s.baseline[i].push(nullable(c.value(p.baseline)));
        s.candidate[i].push(nullable(c.value(p.candidate)));
      });
      view.since = p.at;
    }
    // The controller's bounds, kept here too.
    const newest = s.at.length ? s.at[s.at.length - 1] : 0;
    let drop = 0;
    while (drop < s.at.length && (s.at.length - drop > m.capacity || s.at[drop] < newest - m.keptMs / 1000)) drop += 1;
    if (drop) {
      s.at.splice(0, drop);
      for (const list of [...s.baseline, ...s.candidate]) list.splice(0, drop);
    }
    const grid = $('chart-grid');
    grid.dataset.points = String(s.at.length);
    fill($('charts-note'), s.at.length
      ? `${s.at.length} measurements, one every ${m.intervalMs ? `${m.intervalMs / 1000} s` : 'interval'} while the analysis runs; the controller keeps the last hour.`
      : 'No measurement yet: the charts fill as the rollout\'s analysis measures (a rollout without analysis has none).');
    const names = { baseline: m.baseline, candidate: m.candidate };
    if (!view.plots.length || view.names.baseline !== names.baseline || view.names.candidate !== names.candidate) {
      for (const plot of view.plots) plot.destroy();
      fill(grid);
      view.names = names;
      view.plots = CHARTS.map((c) => {
        const box = el('div', { class: 'chart', data: { chart: c.key } });
        grid.append(box);
        return new uPlot(chartOptions(c, names, box), [[], [], []], box);
      });
    }
    view.plots.forEach((plot, i) => plot.setData([s.at, s.baseline[i], s.candidate[i]]));
  }

  const nullable = (v) => (v === null || v === undefined || Number.isNaN(v) ? null : v);

  function chartOptions(c, names, box) {
    return {
      title: c.title,
      width: chartWidth(box),
      height: 190,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] } },
      series: [
        {},
        { label: names.baseline, stroke: COLOURS.baseline, width: 2, points: { show: false } },
        { label: names.candidate, stroke: COLOURS.candidate, width: 2, points: { show: false } },
      ],
      axes: [{}, { size: 56, values: (u, values) => values.map(c.axis) }],
      legend: { live: true },
    };
  }

  const chartWidth = (box) => Math.max(280, Math.floor((box.parentElement || main).clientWidth / 2) - 24);

  window.addEventListener('resize', () => {
    if (!rollout) return;
    for (const plot of rollout.plots) plot.setSize({ width: chartWidth(plot.root.parentElement), height: 190 });
  });

  function resultsTable(results) {
    return el('table', { class: 'results' },
      head([['Check'], ['Outcome'], ['Value', true], ['Limit', true], ['What it found']]),
      el('tbody', {}, results.map((r) => el('tr', { data: { check: r.name } },
        el('td', { class: 'mono', text: r.name }),
        el('td', {}, badge(r.outcome, OUTCOME_TONES[r.outcome] || 'neutral')),
        el('td', { class: 'num', text: checkValue(r.value, r.limit) }),
        el('td', { class: 'num', text: r.limit }),
        el('td', { text: r.message })))));
  }

  function drawMeasurement(view, s) {
    const body = view.measurement.querySelector('.body');
    const m = s.analysis;
    if (!m) {
      fill(body, el('p', { class: 'empty', text: 'No measurement yet.' }));
      return;
    }
    const tracks = Object.entries(s.tracks || {}).map(([name, t]) => el('tr', {},
      el('td', { class: 'mono', text: name }),
      el('td', { class: 'num', text: number(t.rps) }),
      el('td', { class: 'num', text: percent(t.errorRate) }),
      el('td', { class: 'num', text: ms(t.p50Ms) }),
      el('td', { class: 'num', text: ms(t.p99Ms) }),
      el('td', { class: 'num', text: String(t.requests) })));
    fill(body,
      el('p', {}, badge(m.outcome, OUTCOME_TONES[m.outcome] || 'neutral'),
        m.emergency ? badge('emergency', 'bad') : null,
        m.sequential ? badge('sequential rejection', 'bad') : null,
        ` measured ${s.tracksAgeMs === undefined ? '' : `${(s.tracksAgeMs / 1000).toFixed(1)} s ago`}`),
      tracks.length
        ? el('table', { class: 'tracks' }, head([['Track'], ['Requests/s', true], ['Error rate', true], ['p50', true], ['p99', true], ['Requests', true]]), el('tbody', {}, tracks))
        : null,
      resultsTable(m.results || []));
  }

  function drawAbort(view, abort) {
    view.abort.hidden = !abort;
    if (!abort) return;
    const results = abort.measurements && Array.isArray(abort.measurements.results) ? abort.measurements.results : [];
    const confirmed = abort.confirmedAt
      ? `every proxy on the baseline at ${dateTime(abort.confirmedAt)} (${((abort.confirmedAt - abort.detectedAt) / 1000).toFixed(1)} s after the first failing measurement)`
      : 'not yet confirmed by every proxy';
    fill(view.abort.querySelector('.body'),
      el('p', { id: 'abort-reason', class: 'error-text', text: abort.reason }),
      el('p', { text: `First failing measurement at ${dateTime(abort.detectedAt)}; ${confirmed}.` }),
      results.length ? resultsTable(results) : null);
  }

  function drawEvents(view, events) {
    const rows = [...events].reverse().map((e) => el('tr', {},
      el('td', { class: 'when', text: dateTime(e.at) }),
      el('td', {}, badge(e.kind, e.kind === 'abort' ? 'bad' : e.kind === 'degraded' ? 'warn' : 'neutral')),
      el('td', { text: e.message })));
    fill(view.events.querySelector('.body'), el('table', { class: 'events' }, el('tbody', {}, rows)));
  }

  // ---- Commands ------------------------------------------------------------------------------

  /** Asks before acting; the dialog stays open with the API's words if it refuses. */
  function confirmAction(action, s) {
    const dialog = $('confirm');
    $('confirm-title').textContent = `${action.label.replace('…', '')}: ${s.name}`;
    $('confirm-text').textContent = action.ask(s);
    $('confirm-error').textContent = '';
    $('confirm-weight-row').hidden = !action.weight;
    $('confirm-weight').value = String(s.weight);
    const ok = $('confirm-ok');
    ok.textContent = action.label.replace('…', '');
    ok.className = action.danger ? 'danger' : '';
    ok.disabled = false;
    ok.onclick = async () => {
      let body;
      if (action.weight) {
        const weight = Number($('confirm-weight').value);
        if ($('confirm-weight').value.trim() === '' || !Number.isFinite(weight) || weight < 0 || weight > 100) {
          $('confirm-error').textContent = 'Give the candidate\'s weight, a number from 0 to 100.';
          return;
        }
        body = { weight };
      }
      ok.disabled = true;
      try {
        await command(rolloutPath(s.name, action.path), body);
        dialog.close();
        refresh();
      } catch (e) {
        $('confirm-error').textContent = e.message;
      } finally {
        ok.disabled = false;
      }
    };
    dialog.showModal();
    (action.weight ? $('confirm-weight') : $('confirm-cancel')).focus();
  }

  /** A command; a 401 asks for the token and sends it again with it. */
  async function command(path, body) {
    try {
      return await api('POST', path, body);
    } catch (e) {
      if (e.status !== 401) throw e;
      const given = await askToken(e.message);
      if (!given) throw e;
      return api('POST', path, body);
    }
  }

  let tokenAnswer = null;

  /** Opens the token dialog; resolves true once a token is saved, false if cancelled. */
  function askToken(why) {
    const dialog = $('token');
    $('token-text').textContent = why
      ? `${why}. It is kept in this tab only, until it closes.`
      : 'This control API may take commands only with its bearer token (the file given to switchyard serve --token-file). It is kept in this tab only, until it closes.';
    $('token-input').value = '';
    $('token-forget').hidden = !sessionStorage.getItem(TOKEN_KEY);
    if (!dialog.open) dialog.showModal();
    $('token-input').focus();
    return new Promise((resolve) => {
      tokenAnswer = resolve;
    });
  }

  function answerToken(given) {
    $('token').close();
    tokenButton();
    if (tokenAnswer) tokenAnswer(given);
    tokenAnswer = null;
  }

  function tokenButton() {
    $('token-button').textContent = sessionStorage.getItem(TOKEN_KEY) ? 'API token ✓' : 'API token';
  }

  $('token-save').addEventListener('click', () => {
    const token = $('token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    answerToken(true);
  });
  $('token-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') $('token-save').click();
  });
  $('token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    answerToken(false);
  });
  $('token-cancel').addEventListener('click', () => answerToken(false));
  $('token').addEventListener('cancel', () => answerToken(false));
  $('token-button').addEventListener('click', () => askToken(''));
  $('confirm-cancel').addEventListener('click', () => $('confirm').close());
  $('confirm-weight').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') $('confirm-ok').click();
  });

  window.addEventListener('hashchange', refresh);
  tokenButton();
  refresh();
})();
