// The dashboard's entry: header, navigation and the view the URL fragment names.

import { render } from 'preact';
import { html, useRoute } from './util.js';
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
    </header>
    <main><${View} route=${route} /></main>`;
}

const root = document.getElementById('app');
root.textContent = ''; // the static "Loading…"
render(html`<${App} />`, root);
