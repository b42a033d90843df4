// The instance list: status counts, filters (kept in the URL), server-side paging newest
// first, live refresh, and bulk terminate / purge of the current filter.

import { useState, useEffect } from 'preact/hooks';
import * as api from './api.js';
import { html, href, usePolled, fmtTime, StatusBadge, ErrorBox, ConfirmDialog } from './util.js';

const PAGE = 25;

/** The filter from the route's parameters. */
export function filterOf(params) {
  return {
    status: params.getAll('status'),
    name: params.get('name') || '',
    prefix: params.get('prefix') || '',
    from: params.get('from') || '',
    to: params.get('to') || '',
  };
}

function Counts({ counts, filter }) {
  if (!counts) return null;
  const only = (s) => href('/', { ...filter, status: [s] });
  return html`<nav class="counts" aria-label="Instances by status">
    <a class="count" href=${href('/', { ...filter, status: [] })}>
      <span class="n" data-testid="count-total">${counts.total}</span> total</a>
    ${api.STATUSES.map((s) => html`<a class="count" href=${only(s)}>
      <span class="n" data-testid=${`count-${s}`}>${counts.byStatus[s] ?? 0}</span> <${StatusBadge} status=${s} /></a>`)}
  </nav>`;
}

function FilterForm({ filter }) {
  const [f, setF] = useState(filter);
  useEffect(() => setF(filter), [JSON.stringify(filter)]);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const toggle = (s) => (e) =>
    setF({ ...f, status: e.target.checked ? [...f.status, s] : f.status.filter((x) => x !== s) });
  const submit = (e) => {
    e.preventDefault();
    location.hash = href('/', f);
  };
  return html`<form class="filters" onSubmit=${submit} aria-label="Filter instances">
    <fieldset class="statuses"><legend>Status</legend>
      ${api.STATUSES.map((s) => html`<label><input type="checkbox" name="status" value=${s}
        checked=${f.status.includes(s)} onChange=${toggle(s)} /> ${s}</label>`)}
    </fieldset>
    <label>Name <input name="name" value=${f.name} onInput=${set('name')} placeholder="exact orchestration name" /></label>
    <label>Id prefix <input name="prefix" value=${f.prefix} onInput=${set('prefix')} /></label>
    <label>Created from <input type="datetime-local" step="1" name="from" value=${f.from} onInput=${set('from')} /></label>
    <label>to <input type="datetime-local" step="1" name="to" value=${f.to} onInput=${set('to')} /></label>
    <div class="buttons">
      <button type="submit" class="primary">Apply</button>
      <a class="button" href="#/">Clear</a>
    </div>
  </form>`;
}

/** Bulk terminate or purge: counts what the filter matches first, then asks. */
function Bulk({ filter, onDone }) {
  const [kind, setKind] = useState(null);
  const [count, setCount] = useState(null);
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const statusesFor = (k) => {
    const allowed = k === 'terminate' ? api.LIVE : api.FINISHED;
    return filter.status.length ? filter.status.filter((s) => allowed.includes(s)) : allowed;
  };
  const open = async (k) => {
    setError(null);
    setProgress(null);
    setCount(null);
    try {
      const statuses = statusesFor(k);
      const c = statuses.length ? await api.instanceCounts(filter, { statuses }) : { total: 0 };
      setCount(c.total);
      setKind(k);
    } catch (e) {
      setError(e);
    }
  };
  const run = async () => {
    const n = kind === 'terminate'
      ? await api.terminateAll(filter, setProgress)
      : await api.purgeAll(filter, setProgress);
    setProgress(n);
    onDone();
  };
  const what = kind === 'terminate' ? 'running, pending or suspended' : 'completed, failed, terminated or canceled';
  return html`<div class="bulk">
    <button type="button" onClick=${() => open('terminate')}>Terminate all matching…</button>
    <button type="button" onClick=${() => open('purge')}>Purge all matching…</button>
    <${ErrorBox} error=${error} />
    <${ConfirmDialog} open=${kind !== null} danger
      title=${kind === 'terminate' ? 'Terminate matching instances' : 'Purge matching instances'}
      confirmLabel=${kind === 'terminate' ? `Terminate ${count}` : `Purge ${count}`}
      disabled=${!count} onConfirm=${run} onClose=${() => setKind(null)}>
      <p data-testid="bulk-count"><strong>${count}</strong> ${what} instance${count === 1 ? '' : 's'} match the current filter.</p>
      ${kind === 'purge' ? html`<p>Purging deletes their history for good.</p>` : null}
      ${progress !== null ? html`<p aria-live="polite">${progress} done…</p>` : null}
    </${ConfirmDialog}>
  </div>`;
}

export function InstanceList({ params }) {
  const filter = filterOf(params);
  // `#/?top=N` sets the page size (1–1000).
  const top = Math.min(Math.max(Number(params.get('top')) || PAGE, 1), 1000);
  const key = JSON.stringify([filter, top]);
  // tokens[i] is the continuation token of page i (page 0 has none).
  const [tokens, setTokens] = useState([undefined]);
  useEffect(() => setTokens([undefined]), [key]);
  const token = tokens[tokens.length - 1];
  const { data, error, reload } = usePolled(async (signal) => {
    const [counts, page] = await Promise.all([
      api.instanceCounts(filter, { signal }),
      api.listInstances(filter, { token, top, signal }),
    ]);
    return { counts, page };
  }, [key, token]);
  const page = data && data.page;
  return html`<section>
    <h1>Orchestration instances</h1>
    <${Counts} counts=${data && data.counts} filter=${filter} />
    <${FilterForm} filter=${filter} />
    <${Bulk} filter=${filter} onDone=${reload} />
    <${ErrorBox} error=${error} />
    <table class="instances">
      <caption class="sr-only">Instances, newest first</caption>
      <thead><tr><th scope="col">Instance id</th><th scope="col">Name</th><th scope="col">Status</th>
        <th scope="col">Created</th><th scope="col">Last updated</th></tr></thead>
      <tbody>
        ${page && page.items.map((i) => html`<tr key=${i.instanceId}>
          <td><a href=${href(`/instances/${encodeURIComponent(i.instanceId)}`)}>${i.instanceId}</a></td>
          <td>${i.name}</td>
          <td><${StatusBadge} status=${i.runtimeStatus} /></td>
          <td>${fmtTime(i.createdTime)}</td>
          <td>${fmtTime(i.lastUpdatedTime)}</td>
        </tr>`)}
        ${page && !page.items.length ? html`<tr><td colspan="5" class="empty">No instance matches.</td></tr>` : null}
      </tbody>
    </table>
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled=${tokens.length < 2} onClick=${() => setTokens(tokens.slice(0, -1))}>← Newer</button>
      <span>Page ${tokens.length}</span>
      <button type="button" disabled=${!page || !page.next} onClick=${() => setTokens([...tokens, page.next])}>Older →</button>
    </nav>
  </section>`;
}
