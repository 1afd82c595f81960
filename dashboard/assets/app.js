// fedhub dashboard: polls the dashboard's JSON API every two seconds and draws the panels.
// Plain JavaScript, no build step; every value from the hub goes into the page as text.
'use strict';

(() => {
  const CSRF = document.querySelector('meta[name="fedhub-csrf"]').content;
  const POLL_MS = 2000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const HEALTH_NAMES = { fresh: 'fresh', stale: 'stale', failing: 'failing', never: 'never fetched' };
  const $ = (id) => document.getElementById(id);

  // --- small helpers -------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key === 'data') Object.assign(node.dataset, value);
      else if (key === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function api(method, path, body) {
    const init = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') init.headers['X-Fedhub-Csrf'] = CSRF;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new Error('the dashboard server does not answer (is `fedhub dashboard` still running?)');
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      let message = (data && data.error) || `the dashboard answered ${response.status}`;
      if (response.status === 401) message += ' (the session ended: open the URL fedhub dashboard printed)';
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function seconds(ms) { return Math.round(ms / 1000); }

  function duration(secs) {
    const s = Math.abs(secs);
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  function relative(ts, now) {
    if (!ts) return '';
    const secs = seconds(Date.parse(ts) - Date.parse(now));
    if (Math.abs(secs) < 2) return 'now';
    return secs < 0 ? `${duration(secs)} ago` : `in ${duration(secs)}`;
  }

  function absolute(ts) { return ts ? ts.replace('T', ' ').replace('Z', ' UTC') : ''; }

  // A table cell with a time: relative on top, the exact time below; `data-ts` holds it.
  function timeCell(ts, now, empty) {
    if (!ts) return el('td', { class: 'none', text: empty || '—' });
    return el('td', { data: { ts } }, relative(ts, now), el('span', { class: 'when', text: absolute(ts) }));
  }

  function badge(health) {
    return el('span', { class: `badge ${health}`, text: HEALTH_NAMES[health] || health });
  }

  // The designed states of a panel: loading, empty, error; `null` shows the content.
  function setState(name, kind, text) {
    const box = document.querySelector(`.state[data-for="${name}"]`);
    const content = $(name);
    if (!box) return;
    if (kind === null) {
      box.hidden = true;
      if (content) content.hidden = false;
      return;
    }
    box.hidden = false;
    box.dataset.kind = kind;
    box.textContent = text;
    // An error keeps the last content shown under it; empty hides the content.
    if (kind === 'empty' && content) content.hidden = true;
  }

  function showError(name, error) {
    setState(name, 'error', `${error.message}. Retrying every ${POLL_MS / 1000} s.`);
  }

  let toastTimer;
  function toast(text, kind) {
    const box = $('toast');
    box.textContent = text;
    box.dataset.kind = kind || 'ok';
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, kind === 'error' ? 9000 : 4000);
  }

  // --- confirmation ----------------------------------------------------------------------

  // Asks before every change; resolves to {force} when confirmed, null otherwise.
  function confirmChange(text, withForce) {
    const dialog = $('confirm');
    $('confirm-text').textContent = text;
    $('confirm-force-box').hidden = !withForce;
    $('confirm-force').checked = false;
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        resolve(dialog.returnValue === 'ok' ? { force: $('confirm-force').checked } : null);
      }, { once: true });
      dialog.returnValue = 'cancel';
      dialog.showModal();
    });
  }

  // Confirms, performs `action`, reports, and reloads the panels.
  async function act(question, done, action, withForce) {
    const confirmed = await confirmChange(question, withForce);
    if (!confirmed) return false;
    try {
      await action(confirmed);
      toast(done);
      await tick();
      return true;
    } catch (error) {
      toast(error.message, 'error');
      return false;
    }
  }

  // --- tables ----------------------------------------------------------------------------

  const tables = {
    relationships: { page: 1, sort: 'trust_domain', dir: 'asc' },
    entries: { page: 1, sort: 'spiffe_id', dir: 'asc' },
    agents: { page: 1, sort: 'spiffe_id', dir: 'asc' },
  };

  function query(name, extra) {
    const t = tables[name];
    const params = new URLSearchParams({ page: t.page, per_page: 50, sort: t.sort, dir: t.dir });
    for (const [key, value] of Object.entries(extra)) if (value) params.set(key, value);
    return params.toString();
  }

  function fillRows(name, rows) {
    const body = $(name).querySelector('tbody');
    body.replaceChildren(...rows);
  }

  function pager(name, page) {
    const box = document.querySelector(`.pager[data-for="${name}"]`);
    const pages = Math.max(1, Math.ceil(page.matched / page.per_page));
    const first = page.matched ? (page.page - 1) * page.per_page + 1 : 0;
    const last = Math.min(page.page * page.per_page, page.matched);
    const filtered = page.matched !== page.total ? ` (filtered from ${page.total})` : '';
    const go = (to) => () => { tables[name].page = to; tick(); };
    box.replaceChildren(
      `rows ${first}–${last} of ${page.matched}${filtered}`,
      el('button', { type: 'button', onclick: go(page.page - 1), ...(page.page <= 1 ? { disabled: '' } : {}) }, '‹ prev'),
      `page ${page.page} of ${pages}`,
      el('button', { type: 'button', onclick: go(page.page + 1), ...(page.page >= pages ? { disabled: '' } : {}) }, 'next ›'),
    );
  }

  function sortable(name) {
    for (const th of $(name).querySelectorAll('th[data-sort]')) {
      th.addEventListener('click', () => {
        const t = tables[name];
        if (t.sort === th.dataset.sort) t.dir = t.dir === 'asc' ? 'desc' : 'asc';
        else { t.sort = th.dataset.sort; t.dir = 'asc'; }
        t.page = 1;
        tick();
      });
    }
  }

  function markSort(name) {
    const t = tables[name];
    for (const th of $(name).querySelectorAll('th[data-sort]')) {
      if (th.dataset.sort === t.sort) th.setAttribute('aria-sort', t.dir === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  // --- overview: map and own bundle -------------------------------------------------------

  let mapGrouping = 'auto';

  async function loadOverview() {
    let overview;
    try {
      overview = await api('GET', `/api/overview?map=${mapGrouping}`);
    } catch (error) {
      showError('map', error);
      showError('bundle', error);
      throw error;
    }
    renderBundle(overview.bundle, overview.now);
    renderMap(overview.federation, overview.now, overview.bundle);
  }

  function renderBundle(section, now) {
    if (section.error) { setState('bundle', 'error', `${section.error}. Retrying every ${POLL_MS / 1000} s.`); return; }
    const b = section.ok;
    $('trust-domain').textContent = b.trust_domain;
    document.title = `fedhub · ${b.trust_domain}`;
    $('bundle-sequence').textContent = b.sequence ?? 'none';
    $('bundle-authorities').textContent = `${b.x509_authorities} X.509, ${b.jwt_authorities} JWT`;
    $('bundle-hint').textContent = b.refresh_hint_secs ? duration(b.refresh_hint_secs) : 'none';
    $('bundle-updated').textContent = `${absolute(b.updated_at)} (${relative(b.updated_at, now)})`;
    $('bundle-next').replaceChildren(...(b.next_rotation.length
      ? b.next_rotation.map((r) => el('div', {}, `${r.kind === 'x509' ? 'X.509' : 'JWT'}: ${r.step} ${relative(r.at, now)} (${absolute(r.at)})`))
      : ['not scheduled (no active key known)']));
    const body = $('keys').querySelector('tbody');
    if (b.keys.error) {
      body.replaceChildren(el('tr', {}, el('td', { class: 'err', colspan: '5', text: `keys: ${b.keys.error}` })));
    } else {
      const roles = { active: 'active', prepared: 'prepared', retired: 'retiring' };
      body.replaceChildren(...b.keys.ok.map((k) => el('tr', { data: { role: roles[k.state] || k.state } },
        el('td', { text: k.kind === 'x509' ? 'X.509' : 'JWT' }),
        el('td', { class: 'mono', text: k.id.slice(0, 16) }),
        el('td', { text: roles[k.state] || k.state }),
        timeCell(k.created_at, now),
        timeCell(k.not_after, now))));
    }
    setState('bundle', null);
  }

  function renderMap(section, now, bundle) {
    const map = $('map');
    if (section.error) { setState('map', 'error', `${section.error}. Retrying every ${POLL_MS / 1000} s.`); return; }
    const f = section.ok;
    const center = bundle.ok ? bundle.ok.trust_domain : $('trust-domain').textContent;
    const W = 800, H = 460, cx = W / 2, cy = H / 2;
    const nodes = f.map.nodes;
    const parts = [];
    const edges = svg('g', { class: 'edges' });
    const labels = svg('g', { class: 'labels' });
    const ring = svg('g', { class: 'nodes' });
    const rx = nodes.length > 12 ? 330 : 280, ry = nodes.length > 12 ? 190 : 160;
    nodes.forEach((node, i) => {
      const angle = (2 * Math.PI * i) / Math.max(nodes.length, 1) - Math.PI / 2;
      const x = cx + rx * Math.cos(angle), y = cy + ry * Math.sin(angle);
      edges.append(svg('line', { class: `edge ${node.health}`, x1: cx, y1: cy, x2: x, y2: y }));
      const age = node.last_success_age_secs === null || node.last_success_age_secs === undefined
        ? 'never' : `${duration(node.last_success_age_secs)} ago`;
      labels.append(svg('text', { class: 'edge-label', x: (cx + x) / 2, y: (cy + y) / 2 - 4, 'text-anchor': 'middle' }, age));
      const r = node.count > 1 ? Math.min(34, 14 + 4 * Math.log10(node.count + 1) * 2) : 12;
      const g = svg('g', { class: `node ${node.health}`, 'data-health': node.health, 'data-label': node.label });
      if (node.trust_domain) g.setAttribute('data-trust-domain', node.trust_domain);
      const c = node.counts;
      g.append(svg('title', {}, `${node.label}: ${HEALTH_NAMES[node.health]}; last success ${age}` +
        (node.count > 1 ? `; ${c.fresh} fresh, ${c.stale} stale, ${c.failing} failing, ${c.never} never fetched` : '')));
      g.append(svg('circle', { cx: x, cy: y, r }));
      if (node.count > 1) g.append(svg('text', { x, y: y + 4, 'text-anchor': 'middle' }, String(node.count)));
      const below = y >= cy;
      g.append(svg('text', { x, y: below ? y + r + 14 : y - r - 6, 'text-anchor': 'middle' }, node.label));
      ring.append(g);
    });
    const middle = svg('g', { class: 'center' });
    middle.append(svg('circle', { cx, cy, r: 46 }));
    middle.append(svg('text', { x: cx, y: cy + 4, 'text-anchor': 'middle' }, center.length > 14 ? `${center.slice(0, 13)}…` : center));
    middle.append(svg('title', {}, `this trust domain: ${center}`));
    parts.push(edges, labels, ring, middle);
    map.replaceChildren(...parts);
    map.dataset.groupedBy = f.map.grouped_by;
    map.setAttribute('aria-label', `federation map of ${center}: ${f.total} relationships`);
    if (!nodes.length) {
      setState('map', 'empty', `${center} federates with no trust domain yet. Create a relationship below, or with \`fedhub federation create\`.`);
      map.hidden = false;
      return;
    }
    setState('map', null);
  }

  // --- relationships ---------------------------------------------------------------------

  async function loadRelationships() {
    const extra = { q: $('rel-q').value, health: $('rel-health').value, group: $('rel-group').value };
    let page;
    try {
      page = await api('GET', `/api/relationships?${query('relationships', extra)}`);
    } catch (error) { showError('relationships', error); throw error; }
    $('rel-count').textContent = `(${page.total})`;
    markSort('relationships');
    pager('relationships', page);
    if (!page.total) {
      fillRows('relationships', []);
      setState('relationships', 'empty', 'No federation relationships yet. Create one below (or with `fedhub federation create`) to fetch a foreign trust domain\'s bundle.');
      return;
    }
    if (!page.matched) {
      fillRows('relationships', []);
      setState('relationships', 'empty', 'No relationship matches the filter.');
      return;
    }
    fillRows('relationships', page.items.map((r) => relationshipRow(r, page.now)));
    setState('relationships', null);
  }

  function relationshipRow(r, now) {
    const s = r.status;
    const td = r.trust_domain;
    return el('tr', { data: { trustDomain: td, health: r.health } },
      el('td', { class: 'mono', text: td }),
      el('td', {}, badge(r.health)),
      el('td', { text: r.profile }),
      el('td', { class: 'mono', text: r.bundle_endpoint_url },
        r.source === 'relay' ? el('div', { class: 'via-relay', text: 'via relay' }) : null),
      timeCell(s.last_attempt_at, now, 'never'),
      Object.assign(timeCell(s.last_success_at, now, 'never'), { className: 'last-success' }),
      el('td', { class: 'err', text: s.last_error || '' }),
      el('td', { text: s.consecutive_failures }),
      timeCell(s.next_refresh_at, now, 'now'),
      el('td', { text: r.sequence ?? '—' }),
      timeCell(r.earliest_expiry, now),
      el('td', { text: r.groups.join(', ') }),
      el('td', {},
        el('button', { type: 'button', class: 'refresh', onclick: () => act(
          `Fetch the bundle of ${td} from ${r.bundle_endpoint_url} now?`, `refreshed ${td}`,
          () => api('POST', `/api/relationships/${encodeURIComponent(td)}/refresh`)) }, 'Refresh'),
        el('button', { type: 'button', class: 'edit', onclick: () => editRelationship(r) }, 'Edit'),
        el('button', { type: 'button', class: 'delete danger', onclick: () => act(
          `Delete the relationship with ${td}? Its bundle is removed and agents stop receiving it.`, `deleted ${td}`,
          ({ force }) => api('DELETE', `/api/relationships/${encodeURIComponent(td)}?force=${force}`), true) }, 'Delete')));
  }

  let editing = null;

  function editRelationship(r) {
    const form = $('rel-form');
    editing = r.trust_domain;
    form.trust_domain.value = r.trust_domain;
    form.trust_domain.readOnly = true;
    form.bundle_endpoint_url.value = r.bundle_endpoint_url;
    form.profile.value = r.profile;
    form.source.value = r.source || 'direct';
    form.endpoint_spiffe_id.value = r.endpoint_spiffe_id || '';
    form.require_sequence.checked = r.require_sequence;
    form.accept_empty_bundle.checked = r.accept_empty_bundle;
    form.querySelector('.for-create').hidden = true;
    $('rel-form-title').textContent = `Update the relationship with ${r.trust_domain}`;
    $('rel-submit').textContent = 'Update';
    $('rel-form-box').open = true;
    form.bundle_endpoint_url.focus();
  }

  function resetRelationshipForm() {
    const form = $('rel-form');
    editing = null;
    form.reset();
    form.trust_domain.readOnly = false;
    form.querySelector('.for-create').hidden = false;
    $('rel-form-title').textContent = 'Create a relationship';
    $('rel-submit').textContent = 'Create';
  }

  async function submitRelationship(event) {
    event.preventDefault();
    const form = $('rel-form');
    const spiffeId = form.endpoint_spiffe_id.value.trim() || null;
    const config = {
      bundle_endpoint_url: form.bundle_endpoint_url.value.trim(),
      profile: form.profile.value,
      source: form.source.value,
      endpoint_spiffe_id: form.profile.value === 'https_spiffe' ? spiffeId : null,
      require_sequence: form.require_sequence.checked,
      accept_empty_bundle: form.accept_empty_bundle.checked,
    };
    const td = form.trust_domain.value.trim();
    let ok;
    if (editing) {
      ok = await act(`Update the relationship with ${td}?`, `updated ${td}`,
        () => api('PUT', `/api/relationships/${encodeURIComponent(td)}`, config));
    } else {
      const bundle = form.trust_domain_bundle.value.trim();
      ok = await act(`Create a relationship with ${td} at ${config.bundle_endpoint_url}?`, `created ${td}`,
        () => api('POST', '/api/relationships', { trust_domain: td, ...config, trust_domain_bundle: bundle || null }));
    }
    if (ok) { resetRelationshipForm(); $('rel-form-box').open = false; }
  }

  // --- groups ----------------------------------------------------------------------------

  async function loadGroups() {
    let groups;
    try { groups = await api('GET', '/api/groups'); } catch (error) { showError('groups', error); throw error; }
    const select = $('rel-group');
    const chosen = select.value;
    select.replaceChildren(el('option', { value: '' }, 'any group'),
      ...groups.map((g) => el('option', { value: g.name, text: `${g.name} (${g.members.length})` })));
    select.value = groups.some((g) => g.name === chosen) ? chosen : '';
    if (!groups.length) {
      fillRows('groups', []);
      setState('groups', 'empty', 'No federation groups. A group names a set of trust domains that entries federate with as a whole.');
      return;
    }
    fillRows('groups', groups.map((g) => el('tr', { data: { group: g.name } },
      el('td', { class: 'mono', text: g.name }),
      el('td', { class: 'mono', text: g.members.join(', ') || '—' }),
      el('td', {}, el('button', { type: 'button', class: 'danger', onclick: () => act(
        `Delete the federation group ${g.name}?`, `deleted group ${g.name}`,
        ({ force }) => api('DELETE', `/api/groups/${encodeURIComponent(g.name)}?force=${force}`), true) }, 'Delete')))));
    setState('groups', null);
  }

  async function submitGroup(event) {
    event.preventDefault();
    const form = event.target;
    const name = form.name.value.trim();
    const members = form.members.value.split(',').map((m) => m.trim()).filter(Boolean);
    if (await act(`Create the federation group ${name}${members.length ? ` with ${members.join(', ')}` : ''}?`,
      `created group ${name}`, () => api('POST', '/api/groups', { name, members }))) form.reset();
  }

  async function submitMember(event) {
    event.preventDefault();
    const form = event.target;
    const add = (event.submitter && event.submitter.value) !== 'remove';
    const group = form.group.value.trim(), td = form.trust_domain.value.trim();
    const path = `/api/groups/${encodeURIComponent(group)}/members/${encodeURIComponent(td)}`;
    if (await act(add ? `Add ${td} to the group ${group}?` : `Remove ${td} from the group ${group}?`,
      add ? `added ${td} to ${group}` : `removed ${td} from ${group}`,
      () => api(add ? 'PUT' : 'DELETE', path))) form.reset();
  }

  // --- entries ---------------------------------------------------------------------------

  async function loadEntries() {
    const extra = {
      q: $('entry-q').value, parent: $('entry-parent').value,
      selector: $('entry-selector').value, federates_with: $('entry-federates').value,
    };
    let page;
    try { page = await api('GET', `/api/entries?${query('entries', extra)}`); } catch (error) { showError('entries', error); throw error; }
    $('entry-count').textContent = `(${page.total})`;
    markSort('entries');
    pager('entries', page);
    if (!page.matched) {
      fillRows('entries', []);
      setState('entries', 'empty', page.total ? 'No entry matches the search.' : 'No registration entries yet. Create one below to give workloads an identity.');
      return;
    }
    fillRows('entries', page.items.map((e) => el('tr', { data: { entryId: e.id } },
      el('td', { class: 'mono', text: e.spiffe_id }),
      el('td', { class: 'mono', text: e.parent_id }),
      el('td', { class: 'mono', text: e.selectors.join(', ') }),
      el('td', { class: 'mono', text: e.effective_federates_with.join(', ') || '—' }),
      timeCell(e.updated_at, page.now),
      el('td', {}, el('button', { type: 'button', class: 'danger', onclick: () => act(
        `Delete the entry ${e.spiffe_id} (id ${e.id})? Workloads lose this identity.`, `deleted entry ${e.id}`,
        () => api('DELETE', `/api/entries/${encodeURIComponent(e.id)}`)) }, 'Delete')))));
    setState('entries', null);
  }

  function list(text) { return text.split(',').map((s) => s.trim()).filter(Boolean); }

  async function submitEntry(event) {
    event.preventDefault();
    const form = event.target;
    const body = {
      spiffe_id: form.spiffe_id.value.trim(),
      parent_id: form.parent_id.value.trim(),
      selectors: list(form.selectors.value),
      federates_with: list(form.federates_with.value),
    };
    const unknown = form.allow_unknown_parent.checked;
    if (await act(`Create an entry for ${body.spiffe_id} under ${body.parent_id}?`, `created entry ${body.spiffe_id}`,
      () => api('POST', `/api/entries?allow_unknown_parent=${unknown}`, body))) form.reset();
  }

  // --- agents ----------------------------------------------------------------------------

  async function loadAgents() {
    let page;
    try { page = await api('GET', `/api/agents?${query('agents', { q: $('agent-q').value })}`); } catch (error) { showError('agents', error); throw error; }
    $('agent-count').textContent = `(${page.total})`;
    markSort('agents');
    pager('agents', page);
    if (!page.matched) {
      fillRows('agents', []);
      setState('agents', 'empty', page.total ? 'No agent matches the filter.' : 'No agents have attested yet. Generate a join token with `fedhub token generate`.');
      return;
    }
    fillRows('agents', page.items.map((a) => {
      const id = encodeURIComponent(a.spiffe_id);
      return el('tr', { data: { agent: a.spiffe_id } },
        el('td', { class: 'mono', text: a.spiffe_id }),
        el('td', {}, el('span', { class: `badge ${a.banned ? 'failing' : { live: 'fresh', stale: 'stale', gone: 'never' }[a.state]}`, text: a.banned ? 'banned' : a.state })),
        timeCell(a.last_seen_at, page.now, 'never'),
        timeCell(a.svid_expires_at, page.now),
        el('td', { text: a.attestation_type }),
        el('td', {},
          el('button', { type: 'button', class: 'danger', ...(a.banned ? { disabled: '' } : {}), onclick: () => act(
            `Ban the agent ${a.spiffe_id}? It can no longer renew or attest with this ID.`, `banned ${a.spiffe_id}`,
            () => api('POST', `/api/agents/${id}/ban`)) }, 'Ban'),
          el('button', { type: 'button', class: 'danger', onclick: () => act(
            `Evict the agent ${a.spiffe_id}? It must attest again.`, `evicted ${a.spiffe_id}`,
            () => api('DELETE', `/api/agents/${id}`)) }, 'Evict')));
    }));
    setState('agents', null);
  }

  // --- audit trail -----------------------------------------------------------------------

  // Long details are cut; the whole text is in the cell's tooltip.
  function detailsCell(details) {
    const text = typeof details === 'string' ? details : JSON.stringify(details);
    return el('td', { class: 'mono', title: text, text: text.length > 160 ? `${text.slice(0, 160)}…` : text });
  }

  async function loadAudit() {
    let answer;
    try { answer = await api('GET', '/api/audit?limit=50'); } catch (error) { showError('audit', error); throw error; }
    const events = (answer && answer.events) || [];
    if (!events.length) {
      fillRows('audit', []);
      setState('audit', 'empty', 'No changes recorded yet.');
      return;
    }
    fillRows('audit', events.map((e) => el('tr', {},
      el('td', { text: absolute(e.at) }),
      el('td', { class: 'mono', text: e.actor }),
      el('td', { text: e.action }),
      el('td', { class: 'mono', text: e.target }),
      detailsCell(e.details))));
    setState('audit', null);
  }

  // --- polling ---------------------------------------------------------------------------

  let running = null;
  let timer = null;

  // Loads every panel once; concurrent calls share the round in flight.
  function tick() {
    if (running) return running;
    running = (async () => {
      const results = await Promise.allSettled([
        loadOverview(), loadRelationships(), loadGroups(), loadEntries(), loadAgents(), loadAudit(),
      ]);
      const live = $('live');
      const failed = results.filter((r) => r.status === 'rejected');
      // The audit trail alone failing does not make the hub unreachable.
      if (failed.length && results.slice(0, 5).some((r) => r.status === 'rejected')) {
        live.dataset.state = 'error';
        live.textContent = `${failed[0].reason.message}; retrying every ${POLL_MS / 1000} s`;
      } else {
        live.dataset.state = 'ok';
        live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      }
    })().finally(() => { running = null; });
    return running;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden) await tick();
      schedule();
    }, POLL_MS);
  }

  function debounce(fn) {
    let t;
    return () => { clearTimeout(t); t = setTimeout(fn, 300); };
  }

  function start() {
    for (const name of Object.keys(tables)) sortable(name);
    const reload = (name) => debounce(() => { tables[name].page = 1; tick(); });
    for (const id of ['rel-q', 'rel-health', 'rel-group']) $(id).addEventListener('input', reload('relationships'));
    for (const id of ['entry-q', 'entry-parent', 'entry-selector', 'entry-federates']) $(id).addEventListener('input', reload('entries'));
    $('agent-q').addEventListener('input', reload('agents'));
    $('map-grouping').addEventListener('change', (e) => { mapGrouping = e.target.value; tick(); });
    $('rel-form').addEventListener('submit', submitRelationship);
    $('rel-cancel').addEventListener('click', () => { resetRelationshipForm(); $('rel-form-box').open = false; });
    $('group-form').addEventListener('submit', submitGroup);
    $('member-form').addEventListener('submit', submitMember);
    $('entry-form').addEventListener('submit', submitEntry);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
    tick().finally(schedule);
  }

  start();
})();
