// The public HTTP API (/runtime/webhooks/durabletask/, documented at /openapi.json): the
// only server the dashboard talks to.

const BASE = '/runtime/webhooks/durabletask';
const TOKEN = 'x-ms-continuation-token';

/** A failed request, with the server's message (its JSON error body names the field). */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const seg = encodeURIComponent;

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// With `--auth-tokens-file` every API call needs `Authorization: Bearer <token>`. The
// token lives in sessionStorage (gone when the tab closes) and is asked for on a 401.
const AUTH_KEY = 'durabletask-sidecar.token';
let askToken = null;
let asking = null;

function storedToken() {
  try { return sessionStorage.getItem(AUTH_KEY); } catch { return null; }
}

/** Remembers (or, given nothing, forgets) the bearer token for this tab. */
export function setAuthToken(value) {
  try {
    if (value) sessionStorage.setItem(AUTH_KEY, value);
    else sessionStorage.removeItem(AUTH_KEY);
  } catch { /* storage disabled: the token is asked for again */ }
}

/**
 * `ask(message)` answers a promise of the token the user typed (null: cancelled); it is
 * called once however many requests got a 401 at the same time.
 */
export function onUnauthorized(ask) { askToken = ask; }

async function request(method, path, opts = {}) {
  for (;;) {
    const res = await send(method, path, opts);
    if (res.status !== 401 || !askToken) return finish(method, path, res);
    const body = await res.clone().json().catch(() => null);
    if (!asking) {
      asking = askToken((body && body.message) || 'This sidecar needs a token.')
        .finally(() => { asking = null; });
    }
    const entered = await asking;
    if (!entered) return finish(method, path, res);
    setAuthToken(entered);
  }
}

// The task hub the page works on: `?taskHub=` of the page's own URL (absent: the default
// hub), so a link to the dashboard names its hub; every API call repeats it.
const HUB = new URLSearchParams(location.search).get('taskHub') || '';

/** The task hub this page shows ('' for the default hub). */
export const currentHub = () => HUB;

/** The hubs the sidecar serves now (names in lower case). */
export async function listTaskHubs() {
  return (await request('GET', '/taskHubs')).data.taskHubs;
}

function send(method, path, { params = {}, body, token, signal } = {}) {
  if (HUB) params = { ...params, taskHub: HUB };
  const headers = {};
  if (token) headers[TOKEN] = token;
  const auth = storedToken();
  if (auth) headers.authorization = `Bearer ${auth}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  return fetch(BASE + path + query(params), { method, headers, body, signal });
}

async function finish(method, path, res) {
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok && res.status !== 202) {
    const message = (data && data.message) || `${method} ${path}: HTTP ${res.status}`;
    throw new ApiError(res.status, message);
  }
  return { status: res.status, data, next: res.headers.get(TOKEN) };
}

/** Every runtime status, in the order the dashboard shows them. */
export const STATUSES = ['Running', 'Pending', 'Suspended', 'Completed', 'Failed', 'Terminated', 'Canceled', 'ContinuedAsNew'];
/** Statuses an instance can still leave (terminate applies); the others can be purged. */
export const LIVE = ['Running', 'Pending', 'Suspended'];
export const FINISHED = ['Completed', 'Failed', 'Terminated', 'Canceled'];

/** The list's filter as query parameters (`filter`: status[], name, prefix, from, to). */
function filterParams(f, statuses = f.status) {
  return {
    runtimeStatus: statuses && statuses.length ? statuses.join(',') : undefined,
    name: f.name,
    instanceIdPrefix: f.prefix,
    createdTimeFrom: f.from ? new Date(f.from).toISOString() : undefined,
    createdTimeTo: f.to ? new Date(f.to).toISOString() : undefined,
  };
}

export async function listInstances(filter, { token, top = 25, statuses, signal } = {}) {
  const params = { ...filterParams(filter, statuses), top, order: 'desc', showInput: false };
  const r = await request('GET', '/instances', { params, token, signal });
  return { items: r.data || [], next: r.next };
}

export async function instanceCounts(filter, { statuses, signal } = {}) {
  const r = await request('GET', '/instanceCounts', { params: filterParams(filter, statuses), signal });
  return r.data;
}

export async function getInstance(id, { signal } = {}) {
  const params = { showHistory: true, showHistoryOutput: true, showInput: true };
  return (await request('GET', `/instances/${seg(id)}`, { params, signal })).data;
}

export const terminate = (id, reason) =>
  request('POST', `/instances/${seg(id)}/terminate`, { params: { reason } });
export const suspend = (id, reason) =>
  request('POST', `/instances/${seg(id)}/suspend`, { params: { reason } });
export const resume = (id, reason) =>
  request('POST', `/instances/${seg(id)}/resume`, { params: { reason } });
export const rewind = (id, reason) =>
  request('POST', `/instances/${seg(id)}/rewind`, { params: { reason } });
export const raiseEvent = (id, name, json) =>
  request('POST', `/instances/${seg(id)}/raiseEvent/${seg(name)}`, { body: json });
/** Restarts with a new instance id; answers the new id. */
export const restart = async (id) =>
  (await request('POST', `/instances/${seg(id)}/restart`)).data.id;
export const purge = (id) => request('DELETE', `/instances/${seg(id)}`);

/**
 * Terminates every live instance matching `filter`, a page at a time; `progress(n)` after
 * each. Answers how many were asked to terminate.
 */
export async function terminateAll(filter, progress) {
  const live = filter.status && filter.status.length ? filter.status.filter((s) => LIVE.includes(s)) : LIVE;
  if (!live.length) return 0;
  let done = 0;
  let token;
  do {
    const page = await listInstances(filter, { token, top: 100, statuses: live });
    for (const i of page.items) {
      try {
        await terminate(i.instanceId, 'terminated from the dashboard (bulk)');
        done += 1;
      } catch (e) {
        if (e.status !== 410) throw e; // 410: it ended meanwhile
      }
    }
    progress(done);
    token = page.next;
  } while (token);
  return done;
}

/**
 * Purges every finished instance matching `filter`. Without a name or id prefix the
 * server does it in one request (DELETE instances?createdTimeFrom=…); otherwise one
 * DELETE per listed instance.
 */
export async function purgeAll(filter, progress) {
  const finished = filter.status && filter.status.length ? filter.status.filter((s) => FINISHED.includes(s)) : FINISHED;
  if (!finished.length) return 0;
  if (!filter.name && !filter.prefix) {
    const params = { ...filterParams(filter, finished) };
    params.createdTimeFrom = params.createdTimeFrom || new Date(0).toISOString();
    try {
      const r = await request('DELETE', '/instances', { params });
      progress(r.data.instancesDeleted);
      return r.data.instancesDeleted;
    } catch (e) {
      if (e.status === 404) return 0; // nothing matched
      throw e;
    }
  }
  let done = 0;
  for (;;) {
    // Always the first page: purged instances leave the list.
    const page = await listInstances(filter, { top: 100, statuses: finished });
    if (!page.items.length) return done;
    for (const i of page.items) {
      try {
        await purge(i.instanceId);
        done += 1;
      } catch (e) {
        if (e.status !== 404) throw e;
      }
    }
    progress(done);
  }
}

export async function listEntities(filter, { token, top = 25, signal } = {}) {
  const path = filter.name ? `/entities/${seg(filter.name)}` : '/entities';
  const params = {
    fetchState: true,
    top,
    keyPrefix: filter.name ? filter.keyPrefix : undefined,
    lastOperationTimeFrom: filter.from ? new Date(filter.from).toISOString() : undefined,
    lastOperationTimeTo: filter.to ? new Date(filter.to).toISOString() : undefined,
  };
  const r = await request('GET', path, { params, token, signal });
  return { items: r.data || [], next: r.next };
}

/** One entity's listing entry (state, lock owner, backlog), or null when it does not exist. */
export async function getEntity(name, key, { signal } = {}) {
  const r = await request('GET', `/entities/${seg(name)}`, { params: { keyPrefix: key, fetchState: true, top: 10 }, signal });
  return (r.data || []).find((e) => e.entityId.key === key) || null;
}

export const signalEntity = (name, key, op, json) =>
  request('POST', `/entities/${seg(name)}/${seg(key) || '$'}`, { params: { op }, body: json || undefined });
