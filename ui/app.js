// The dashboard's entry: header, navigation and the view the URL fragment names.

import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { html, useRoute } from './util.js';
import { currentHub, listTaskHubs, onUnauthorized } from './api.js';
import { InstanceList } from './list.js';
import { InstancePage } from './instance.js';
import { EntityList, EntityPage } from './entities.js';

function View({ route }) {
  const parts = route.path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'instances' && parts.length === 2) {
    return html`<${InstancePage} key=${parts[1]} id=${parts[1]} />`;
  }
  if (parts[0] === 'entities' && parts.length === 3) {
    return html`<${EntityPage} key=${parts.join('/')} name=${parts[1]} entityKey=${parts[2]} />`;
  }
  if (parts[0] === 'entities') return html`<${EntityList} params=${route.params} />`;
  return html`<${InstanceList} params=${route.params} />`;
}

/** Asks for a bearer token when the API answers 401 (the server has --auth-tokens-file). */
function TokenPrompt() {
  const [ask, setAsk] = useState(null);
  const dialog = useRef(null);
  const input = useRef(null);
  useEffect(() => onUnauthorized((message) => new Promise((resolve) => setAsk({ message, resolve }))), []);
  useEffect(() => {
    if (ask && dialog.current && !dialog.current.open) dialog.current.showModal();
  }, [ask]);
  if (!ask) return null;
  const done = (value) => {
    dialog.current.close();
    setAsk(null);
    ask.resolve(value);
  };
  return html`<dialog ref=${dialog} aria-labelledby="token-title" onCancel=${() => done(null)}>
    <form method="dialog" onSubmit=${(e) => { e.preventDefault(); done(input.current.value.trim() || null); }}>
      <h2 id="token-title">Access token</h2>
      <p>${ask.message}</p>
      <label>Bearer token (kept for this tab only)
        <input ref=${input} type="password" name="token" autocomplete="off" required />
      </label>
      <div class="buttons">
        <button type="button" onClick=${() => done(null)}>Cancel</button>
        <button type="submit">Use token</button>
      </div>
    </form>
  </dialog>`;
}

/** The task hub selector: switching hubs reloads the page on that hub's URL. */
function HubPicker() {
  const [hubs, setHubs] = useState(null);
  const hub = (currentHub() || 'default').toLowerCase();
  useEffect(() => {
    listTaskHubs().then(setHubs, () => setHubs([]));
  }, []);
  const names = [...new Set([...(hubs || []), hub])].sort();
  const pick = (e) => {
    const name = e.target.value;
    const url = new URL(location.href);
    if (name === 'default') url.searchParams.delete('taskHub');
    else url.searchParams.set('taskHub', name);
    url.hash = '#/';
    location.assign(url.toString());
  };
  return html`<label class="hub">Task hub
    <select value=${hub} onChange=${pick}>
      ${names.map((n) => html`<option value=${n}>${n}</option>`)}
    </select>
  </label>`;
}

function App() {
  const route = useRoute();
  const onEntities = route.path.startsWith('/entities');
  return html`<header class="top">
      <a class="brand" href="#/">Durable Task sidecar</a>
      <nav aria-label="Main">
        <a href="#/" aria-current=${onEntities ? null : 'page'}>Orchestrations</a>
        <a href="#/entities" aria-current=${onEntities ? 'page' : null}>Entities</a>
        <a href="/openapi.json">API</a>
      </nav>
      <${HubPicker} />
    </header>
    <main><${View} route=${route} /></main>
    <${TokenPrompt} />`;
}

const root = document.getElementById('app');
root.textContent = ''; // the static "Loading…"
render(html`<${App} />`, root);
