// The history as bars on a time axis (vis-timeline): one row per kind of work. Each
// activity attempt is its own scheduled→completed/failed pair in the history, so retries
// show as separate bars; work still in progress is a dashed bar up to now.

import { useEffect, useRef } from 'preact/hooks';
import { Timeline } from 'vis-timeline';
import { html } from './util.js';

const GROUPS = [
  { id: 'orchestration', content: 'Orchestration' },
  { id: 'activities', content: 'Activities' },
  { id: 'suborchestrations', content: 'Sub-orchestrations' },
  { id: 'timers', content: 'Timers' },
  { id: 'events', content: 'Events' },
];

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * Timeline items from `historyEvents` (Durable Functions shape). `now` ends the bars of
 * work still in progress. Item ids are the event's index; `child` marks a sub-orchestration.
 */
export function timelineItems(events, status, now) {
  const items = [];
  const live = ['Running', 'Pending', 'Suspended'].includes(status);
  const t = (e, k = 'Timestamp') => (e[k] ? new Date(e[k]) : null);
  let started = null;
  let ended = null;
  const openTimers = [];
  events.forEach((e, i) => {
    const at = t(e);
    switch (e.EventType) {
      case 'ExecutionStarted':
        started = at;
        break;
      case 'ExecutionCompleted':
      case 'ExecutionTerminated':
        ended = at;
        break;
      case 'TaskCompleted':
      case 'TaskFailed':
      case 'SubOrchestrationInstanceCompleted':
      case 'SubOrchestrationInstanceFailed': {
        const failed = e.EventType.endsWith('Failed');
        const sub = e.EventType.startsWith('Sub');
        items.push({
          id: i,
          group: sub ? 'suborchestrations' : 'activities',
          start: t(e, 'ScheduledTime') || at,
          end: at,
          content: esc(e.FunctionName || e.EventType),
          title: esc(`${e.FunctionName}: ${failed ? `failed: ${e.Reason || ''}` : 'completed'}`),
          className: failed ? 'bar-failed' : 'bar-ok',
          child: sub ? e.InstanceId : undefined,
        });
        break;
      }
      case 'TaskScheduled':
      case 'SubOrchestrationInstanceCreated': {
        // Still in progress (the API folds finished ones into their completions).
        const sub = e.EventType.startsWith('Sub');
        items.push({
          id: i,
          group: sub ? 'suborchestrations' : 'activities',
          start: at,
          end: live ? now : at,
          content: esc(e.Name),
          title: esc(`${e.Name}: in progress`),
          className: 'bar-pending',
          child: sub ? e.InstanceId : undefined,
        });
        break;
      }
      case 'TimerCreated':
        openTimers.push({ i, at, fireAt: e.FireAt });
        break;
      case 'TimerFired': {
        const k = openTimers.findIndex((o) => o.fireAt === e.FireAt);
        const created = k >= 0 ? openTimers.splice(k, 1)[0] : null;
        items.push({
          id: i,
          group: 'timers',
          start: created ? created.at : t(e, 'FireAt') || at,
          end: at,
          content: 'timer',
          title: esc(`timer due ${e.FireAt}`),
          className: 'bar-timer',
        });
        break;
      }
      case 'EventRaised':
      case 'EventSent':
        items.push({
          id: i,
          group: 'events',
          start: at,
          type: 'point',
          content: esc(`${e.EventType === 'EventSent' ? '→ ' : ''}${e.Name}`),
          title: esc(`${e.EventType} ${e.Name}`),
        });
        break;
      case 'ExecutionSuspended':
      case 'ExecutionResumed':
        items.push({ id: i, group: 'orchestration', start: at, type: 'point', content: e.EventType.replace('Execution', '').toLowerCase() });
        break;
      default:
    }
  });
  for (const o of openTimers) {
    items.push({ id: o.i, group: 'timers', start: o.at, end: new Date(o.fireAt), content: 'timer (pending)', className: 'bar-pending' });
  }
  if (started) {
    items.push({
      id: 'run',
      group: 'orchestration',
      start: started,
      end: ended || (live ? now : started),
      content: status,
      className: `bar-run s-${status.toLowerCase()}`,
    });
  }
  // vis-timeline wants end > start; a zero-length bar becomes 1 ms so it still shows.
  for (const it of items) {
    if (it.end && it.end <= it.start) it.end = new Date(it.start.getTime() + 1);
  }
  return items;
}

export function HistoryTimeline({ events, status, onOpenChild }) {
  const box = useRef(null);
  const tl = useRef(null);
  const childOf = useRef(new Map());
  useEffect(() => {
    tl.current = new Timeline(box.current, [], GROUPS, {
      stack: true,
      zoomKey: 'ctrlKey',
      orientation: 'top',
      margin: { item: 4 },
      tooltip: { followMouse: true },
    });
    tl.current.on('select', ({ items }) => {
      const child = items.length && childOf.current.get(items[0]);
      if (child) onOpenChild(child);
    });
    return () => tl.current.destroy();
  }, []);
  useEffect(() => {
    const items = timelineItems(events, status, new Date());
    childOf.current = new Map(items.filter((i) => i.child).map((i) => [i.id, i.child]));
    const first = !tl.current.itemsData || tl.current.itemsData.length === 0;
    tl.current.setItems(items);
    if (first && items.length) tl.current.fit({ animation: false });
  }, [events, status]);
  return html`<div class="timeline" ref=${box} data-testid="timeline"
    aria-label="History timeline (Ctrl+wheel zooms; select a sub-orchestration to open it)"></div>`;
}
