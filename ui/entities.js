// Entities: the list (name, key prefix and last-operation window, server-side paging),
// one entity's state, lock owner and backlog, and signalling an operation.

import { useState, useEffect } from 'preact/hooks';
import * as api from './api.js';
import { html, href, usePolled, fmtTime, fmtJson, parseJson, ErrorBox } from './util.js';

const PAGE = 25;
const entityHref = (name, key) =>
  href(`/entities/${encodeURIComponent(name)}/${encodeURIComponent(key)}`);
const instanceHref = (id) => href(`/instances/${encodeURIComponent(id)}`);

function filterOf(params) {
  return {
    name: params.get('name') || '',
    keyPrefix: params.get('keyPrefix') || '',
    from: params.get('from') || '',
    to: params.get('to') || '',
  };
}

function preview(state) {
  const s = state === undefined || state === null ? '' : JSON.stringify(state);
  return s.length > 80 ? `${s.slice(0, 77)}…` : s;
}

export function EntityList({ params }) {
  const filter = filterOf(params);
  const key = JSON.stringify(filter);
  const [f, setF] = useState(filter);
  useEffect(() => setF(filter), [key]);
  const [tokens, setTokens] = useState([undefined]);
  useEffect(() => setTokens([undefined]), [key]);
  const token = tokens[tokens.length - 1];
  const { data: page, error } = usePolled(
    (signal) => api.listEntities(filter, { token, top: PAGE, signal }), [key, token]);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = (e) => {
    e.preventDefault();
    location.hash = href('/entities', f);
  };
  return html`<section>
    <h1>Entities</h1>
    <form class="filters" onSubmit=${submit} aria-label="Filter entities">
      <label>Entity name <input name="name" value=${f.name} onInput=${set('name')} placeholder="exact name" /></label>
      <label>Key prefix <input name="keyPrefix" value=${f.keyPrefix} onInput=${set('keyPrefix')}
        disabled=${!f.name} title="needs an entity name" /></label>
      <label>Last operation from <input type="datetime-local" step="1" value=${f.from} onInput=${set('from')} /></label>
      <label>to <input type="datetime-local" step="1" value=${f.to} onInput=${set('to')} /></label>
      <div class="buttons"><button type="submit" class="primary">Apply</button>
        <a class="button" href="#/entities">Clear</a></div>
    </form>
    <${ErrorBox} error=${error} />
    <table class="entities">
      <caption class="sr-only">Entities</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Key</th><th scope="col">State</th>
        <th scope="col">Locked by</th><th scope="col">Backlog</th><th scope="col">Last operation</th></tr></thead>
      <tbody>
        ${page && page.items.map((e) => html`<tr key=${`${e.entityId.name}@${e.entityId.key}`}>
          <td>${e.entityId.name}</td>
          <td><a href=${entityHref(e.entityId.name, e.entityId.key)}>${e.entityId.key || '(empty key)'}</a></td>
          <td><code>${preview(e.state)}</code></td>
          <td>${e.lockedBy ? html`<a href=${instanceHref(e.lockedBy)}>${e.lockedBy}</a>` : '—'}</td>
          <td>${e.backlogQueueSize ?? ''}</td>
          <td>${fmtTime(e.lastOperationTime)}</td></tr>`)}
        ${page && !page.items.length ? html`<tr><td colspan="6" class="empty">No entity matches.</td></tr>` : null}
      </tbody>
    </table>
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled=${tokens.length < 2} onClick=${() => setTokens(tokens.slice(0, -1))}>← Previous</button>
      <span>Page ${tokens.length}</span>
      <button type="button" disabled=${!page || !page.next} onClick=${() => setTokens([...tokens, page.next])}>Next →</button>
    </nav>
  </section>`;
}

function SignalForm({ name, entityKey, onSent }) {
  const [op, setOp] = useState('');
  const [input, setInput] = useState('');
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const parsed = parseJson(input);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    setNotice(null);
    if (parsed.error) {
      setError(new Error(`Input is ${parsed.error}`));
      return;
    }
    try {
      await api.signalEntity(name, entityKey, op.trim(), input.trim() ? input : undefined);
      setNotice(`Signalled ${op}.`);
      onSent();
    } catch (err) {
      setError(err);
    }
  };
  return html`<form class="signal" onSubmit=${submit} aria-label="Signal an operation">
    <h2>Signal an operation</h2>
    <label>Operation <input required value=${op} onInput=${(e) => setOp(e.target.value)} /></label>
    <label>Input (JSON, optional) <input value=${input} onInput=${(e) => setInput(e.target.value)}
      aria-invalid=${parsed.error ? 'true' : 'false'} /></label>
    ${parsed.error ? html`<p class="error">Input is ${parsed.error}</p>` : null}
    <div class="buttons"><button type="submit" class="primary" disabled=${!!parsed.error}>Signal</button></div>
    <${ErrorBox} error=${error} />
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
  </form>`;
}

export function EntityPage({ name, entityKey }) {
  const { data: entity, error, loading, reload } = usePolled(
    (signal) => api.getEntity(name, entityKey, { signal }), [name, entityKey]);
  return html`<section>
    <p><a href="#/entities">← All entities</a></p>
    <h1>Entity <code>${name}</code> / <code data-testid="entity-key">${entityKey}</code></h1>
    <${ErrorBox} error=${error} />
    ${entity ? html`<dl class="facts">
        <dt>Locked by</dt><dd data-testid="entity-lock">${entity.lockedBy
          ? html`<a href=${instanceHref(entity.lockedBy)}>${entity.lockedBy}</a>` : 'not locked'}</dd>
        <dt>Backlog</dt><dd>${entity.backlogQueueSize} queued operation(s)</dd>
        <dt>Last operation</dt><dd>${fmtTime(entity.lastOperationTime)}</dd>
      </dl>
      <h2>State</h2><pre data-testid="entity-state">${fmtJson(entity.state)}</pre>`
      : loading ? html`<p class="loading">Loading…</p>` : html`<p>This entity has no state.</p>`}
    <${SignalForm} name=${name} entityKey=${entityKey} onSent=${reload} />
  </section>`;
}
