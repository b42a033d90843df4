// Small shared pieces: the htm template tag, hash routing, visible-tab polling, formatting.

import { h } from 'preact';
import { useEffect, useRef, useState, useCallback } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

/** How often a view refreshes itself while the tab is visible. */
export const POLL_MS = 3000;
/** Right after an action, for a few seconds, it looks sooner: its effect is a moment away. */
const AFTER_ACTION_MS = 500;
const AFTER_ACTION_FOR_MS = 4000;

/** The current `#/path?query` as { path, params }; re-renders on navigation. */
export function useRoute() {
  const read = () => {
    const raw = location.hash.replace(/^#/, '') || '/';
    const [path, q = ''] = raw.split('?');
    return { path, params: new URLSearchParams(q) };
  };
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

/** `#/path?k=v` from a path and an object of parameters (empty values left out). */
export function href(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

/**
 * Loads with `load(signal)` now, whenever `deps` change, and every POLL_MS while the tab
 * is visible (a hidden tab sends nothing; it reloads when shown again) and
 * `keepPolling(data)` holds. One request at a time: the next poll is scheduled only after
 * the previous answer. `reload()` loads at once, then polls faster for a few seconds and
 * keeps polling for a while whatever `keepPolling` says (an action's effect shows up a
 * moment later, through the server's queue).
 */
export function usePolled(load, deps, { keepPolling = () => true } = {}) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const timer = useRef(null);
  const run = useRef(null);
  const forceUntil = useRef(0);
  const fastUntil = useRef(0);
  useEffect(() => {
    let stopped = false;
    let ctrl = null;
    let last = null;
    const schedule = () => {
      clearTimeout(timer.current);
      const wanted = last === null || keepPolling(last) || Date.now() < forceUntil.current;
      if (!stopped && wanted && document.visibilityState === 'visible') {
        timer.current = setTimeout(tick, Date.now() < fastUntil.current ? AFTER_ACTION_MS : POLL_MS);
      }
    };
    const tick = async () => {
      if (ctrl) ctrl.abort();
      ctrl = new AbortController();
      const mine = ctrl;
      try {
        const data = await load(mine.signal);
        last = data;
        if (!stopped && mine === ctrl) setState({ data, error: null, loading: false });
      } catch (e) {
        if (e.name === 'AbortError') return;
        if (!stopped && mine === ctrl) setState((s) => ({ ...s, error: e, loading: false }));
      }
      if (mine === ctrl) schedule();
    };
    const onVisible = () => {
      if (document.visibilityState === 'visible') tick();
      else clearTimeout(timer.current);
    };
    run.current = tick;
    setState((s) => ({ ...s, loading: true }));
    tick();
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      stopped = true;
      clearTimeout(timer.current);
      if (ctrl) ctrl.abort();
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, deps);
  const reload = useCallback(() => {
    forceUntil.current = Date.now() + 10 * POLL_MS;
    fastUntil.current = Date.now() + AFTER_ACTION_FOR_MS;
    if (run.current) run.current();
  }, []);
  return { ...state, reload };
}

/**
 * `2026-01-31 12:00:00` in the browser's time zone (as the filters' inputs are);
 * `withMs` adds milliseconds (history events are that precise).
 */
export function fmtTime(t, withMs = false) {
  if (!t) return '';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  const s = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return withMs ? `${s}.${p(d.getMilliseconds(), 3)}` : s;
}

export function fmtDuration(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function fmtJson(v) {
  if (v === undefined || v === null) return '';
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

export const StatusBadge = ({ status }) =>
  html`<span class=${`badge s-${(status || 'unknown').toLowerCase()}`}>${status}</span>`;

/** An error message box (role=alert so a screen reader says it). */
export const ErrorBox = ({ error }) =>
  error ? html`<p class="error" role="alert">${error.message || String(error)}</p>` : null;

/**
 * A confirmation dialog (the native <dialog>: modal, Escape cancels, focus trapped).
 * `confirm` runs on submit; the dialog shows its error and stays open if it throws.
 */
export function ConfirmDialog({ open, title, children, confirmLabel, danger, disabled, onConfirm, onClose }) {
  const ref = useRef(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) {
      setError(null);
      d.showModal();
    } else if (!open && d.open) d.close();
  }, [open]);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
      onClose();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<dialog ref=${ref} onClose=${onClose} aria-label=${title}>
    <form onSubmit=${submit}>
      <h2>${title}</h2>
      ${children}
      <${ErrorBox} error=${error} />
      <div class="buttons">
        <button type="button" onClick=${onClose}>Cancel</button>
        <button type="submit" class=${danger ? 'danger' : 'primary'} disabled=${busy || disabled}>${confirmLabel}</button>
      </div>
    </form>
  </dialog>`;
}

/** Parses a JSON text field; answers { value } or { error } with the parser's message. */
export function parseJson(text) {
  if (!text.trim()) return { value: undefined };
  try {
    return { value: JSON.parse(text) };
  } catch (e) {
    return { error: `not valid JSON: ${e.message}` };
  }
}
