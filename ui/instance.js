// One instance: status, payloads, failure, history (timeline and table), parent and
// children, and the actions, destructive ones behind a confirmation.

import { useState } from 'preact/hooks';
import * as api from './api.js';
import { HistoryTimeline } from './timeline.js';
import {
  html, href, usePolled, fmtTime, fmtDuration, fmtJson, parseJson,
  StatusBadge, ErrorBox, ConfirmDialog,
} from './util.js';

const instanceHref = (id) => href(`/instances/${encodeURIComponent(id)}`);

function Failure({ f, title = 'Failure' }) {
  if (!f) return null;
  return html`<div class="failure">
    <h3>${title}: <code>${f.errorType}</code></h3>
    <p class="message">${f.errorMessage}</p>
    ${f.stackTrace ? html`<details><summary>Stack trace</summary><pre>${f.stackTrace}</pre></details>` : null}
    ${f.innerFailure ? html`<${Failure} f=${f.innerFailure} title="Inner failure" />` : null}
  </div>`;
}

const Payload = ({ label, value }) =>
  value === null || value === undefined ? null : html`<div class="payload">
    <h3>${label}</h3><pre data-testid=${`payload-${label.toLowerCase()}`}>${fmtJson(value)}</pre></div>`;

/** What the history table shows in its last column for one event. */
function details(e) {
  const parts = [];
  if (e.ScheduledTime) parts.push(`took ${fmtDuration(new Date(e.Timestamp) - new Date(e.ScheduledTime))}`);
  if (e.EventType === 'TaskScheduled' || e.EventType === 'SubOrchestrationInstanceCreated') parts.push('in progress');
  if (e.FireAt) parts.push(`due ${fmtTime(e.FireAt)}`);
  if (e.Reason) parts.push(typeof e.Reason === 'string' ? e.Reason : JSON.stringify(e.Reason));
  if (e.OrchestrationStatus) parts.push(e.OrchestrationStatus);
  for (const k of ['Input', 'Result']) {
    if (e[k] !== undefined && e[k] !== null) parts.push(`${k.toLowerCase()}: ${JSON.stringify(e[k])}`);
  }
  return parts.join(' · ');
}

function HistoryTable({ events }) {
  return html`<table class="history" data-testid="history-table">
    <caption class="sr-only">History events, oldest first</caption>
    <thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Event</th>
      <th scope="col">Name</th><th scope="col">Details</th></tr></thead>
    <tbody>${events.map((e, i) => html`<tr key=${i} class=${e.EventType.endsWith('Failed') ? 'row-failed' : ''}>
      <td>${i}</td><td>${fmtTime(e.Timestamp, true)}</td><td>${e.EventType}</td>
      <td>${e.InstanceId && e.EventType.startsWith('SubOrchestration')
        ? html`<a href=${instanceHref(e.InstanceId)}>${e.FunctionName || e.Name}</a>` : e.FunctionName || e.Name || ''}</td>
      <td class="details">${details(e)}</td></tr>`)}
    </tbody></table>`;
}

/** The actions an instance in `status` allows, each with its dialog (or none). */
function Actions({ inst, reload }) {
  const id = inst.instanceId;
  const s = inst.runtimeStatus;
  const live = api.LIVE.includes(s);
  const [dialog, setDialog] = useState(null);
  const [reason, setReason] = useState('');
  const [eventName, setEventName] = useState('');
  const [payload, setPayload] = useState('');
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const close = () => setDialog(null);
  const act = async (fn, message) => {
    setError(null);
    setNotice(null);
    try {
      await fn();
      setNotice(message);
      reload();
    } catch (e) {
      setError(e);
    }
  };
  const parsed = parseJson(payload);
  const raise = async () => {
    if (!eventName.trim()) throw new Error('the event name is required');
    if (parsed.error) throw new Error(`Payload is ${parsed.error}`);
    await api.raiseEvent(id, eventName.trim(), payload.trim() ? payload : undefined);
    setNotice(`Event ${eventName} sent.`);
    reload();
  };
  const ReasonField = html`<label>Reason (optional) <input value=${reason} onInput=${(e) => setReason(e.target.value)} /></label>`;
  return html`<div class="actions" role="group" aria-label="Actions">
    ${live ? html`<button type="button" class="danger" onClick=${() => setDialog('terminate')}>Terminate…</button>` : null}
    ${s === 'Running' || s === 'Pending' ? html`<button type="button" onClick=${() => act(() => api.suspend(id, 'suspended from the dashboard'), 'Suspend requested.')}>Suspend</button>` : null}
    ${s === 'Suspended' ? html`<button type="button" onClick=${() => act(() => api.resume(id, 'resumed from the dashboard'), 'Resume requested.')}>Resume</button>` : null}
    ${live ? html`<button type="button" onClick=${() => setDialog('raise')}>Raise event…</button>` : null}
    ${s === 'Failed' ? html`<button type="button" onClick=${() => setDialog('rewind')}>Rewind…</button>` : null}
    <button type="button" onClick=${() => setDialog('restart')}>Restart…</button>
    ${!live ? html`<button type="button" class="danger" onClick=${() => setDialog('purge')}>Purge…</button>` : null}
    <${ErrorBox} error=${error} />
    ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}

    <${ConfirmDialog} open=${dialog === 'terminate'} danger title="Terminate instance" confirmLabel="Terminate"
      onClose=${close} onConfirm=${() => act(() => api.terminate(id, reason || 'terminated from the dashboard'), 'Terminate requested.')}>
      <p>Terminate <code>${id}</code>? Its pending work is abandoned.</p>${ReasonField}
    </${ConfirmDialog}>
    <${ConfirmDialog} open=${dialog === 'rewind'} title="Rewind instance" confirmLabel="Rewind"
      onClose=${close} onConfirm=${() => act(() => api.rewind(id, reason || 'rewound from the dashboard'), 'Rewind requested.')}>
      <p>Rewind <code>${id}</code>: its failed tasks run again.</p>${ReasonField}
    </${ConfirmDialog}>
    <${ConfirmDialog} open=${dialog === 'restart'} title="Restart instance" confirmLabel="Restart"
      onClose=${close} onConfirm=${async () => {
        const newId = await api.restart(id);
        location.hash = instanceHref(newId);
      }}>
      <p>Start <code>${inst.name}</code> again with the same input, as a new instance?</p>
    </${ConfirmDialog}>
    <${ConfirmDialog} open=${dialog === 'purge'} danger title="Purge instance" confirmLabel="Purge"
      onClose=${close} onConfirm=${async () => {
        await api.purge(id);
        location.hash = '#/';
      }}>
      <p>Delete <code>${id}</code> and its history for good?</p>
    </${ConfirmDialog}>
    <${ConfirmDialog} open=${dialog === 'raise'} title="Raise event" confirmLabel="Send event"
      onClose=${close} onConfirm=${raise}>
      <label>Event name <input required value=${eventName} onInput=${(e) => setEventName(e.target.value)} /></label>
      <label>Payload (JSON, optional)
        <textarea rows="4" value=${payload} onInput=${(e) => setPayload(e.target.value)}
          aria-invalid=${parsed.error ? 'true' : 'false'} aria-describedby="payload-check"></textarea></label>
      <p id="payload-check" class=${parsed.error ? 'error' : 'hint'}>${parsed.error ? `Payload is ${parsed.error}` : 'Valid JSON (or empty).'}</p>
    </${ConfirmDialog}>
  </div>`;
}

export function InstancePage({ id }) {
  // A finished instance changes only through an action (whose reload polls a while).
  const { data: inst, error, reload } = usePolled((signal) => api.getInstance(id, { signal }), [id],
    { keepPolling: (r) => api.LIVE.includes(r.runtimeStatus) });
  if (!inst) {
    return html`<section><h1>Instance <code>${id}</code></h1>
      ${error ? html`<${ErrorBox} error=${error} />` : html`<p class="loading">Loading…</p>`}
      <p><a href="#/">← All instances</a></p></section>`;
  }
  const events = inst.historyEvents || [];
  const children = [...new Map(events.filter((e) => e.InstanceId && e.EventType.startsWith('SubOrchestration'))
    .map((e) => [e.InstanceId, e])).values()];
  return html`<section>
    <p><a href="#/">← All instances</a></p>
    <h1>Instance <code data-testid="instance-id">${id}</code> <${StatusBadge} status=${inst.runtimeStatus} /></h1>
    <${ErrorBox} error=${error} />
    <dl class="facts">
      <dt>Name</dt><dd>${inst.name}</dd>
      <dt>Status</dt><dd data-testid="instance-status">${inst.runtimeStatus}</dd>
      <dt>Created</dt><dd>${fmtTime(inst.createdTime)}</dd>
      <dt>Last updated</dt><dd>${fmtTime(inst.lastUpdatedTime)}</dd>
      ${inst.parentInstanceId ? html`<dt>Parent</dt><dd><a href=${instanceHref(inst.parentInstanceId)}>${inst.parentInstanceId}</a></dd>` : null}
      ${children.length ? html`<dt>Children</dt><dd><ul class="children">${children.map((c) =>
        html`<li><a href=${instanceHref(c.InstanceId)}>${c.InstanceId}</a> (${c.FunctionName || c.Name})</li>`)}</ul></dd>` : null}
    </dl>
    <${Actions} inst=${inst} reload=${reload} />
    <${Failure} f=${inst.failureDetails} />
    <div class="payloads">
      <${Payload} label="Input" value=${inst.input} />
      <${Payload} label="Output" value=${inst.output} />
      <${Payload} label="Custom status" value=${inst.customStatus} />
    </div>
    <h2>Timeline</h2>
    <${HistoryTimeline} events=${events} status=${inst.runtimeStatus}
      onOpenChild=${(child) => { location.hash = instanceHref(child); }} />
    <h2>History</h2>
    <${HistoryTable} events=${events} />
  </section>`;
}
