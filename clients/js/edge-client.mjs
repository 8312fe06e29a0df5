/*
 * The device side of the gateway's edge: enrolment, access and refresh tokens, and the `fetch` wrapper that
 * PouchDB uses (`new PouchDB(url, { fetch: client.fetch })`). It attaches `Authorization: Bearer`, refreshes
 * an expiring access token once (single flight: a refresh token is valid for one use), and reads the edge's
 * stable codes: `device_revoked` / `device_wiped` / `user_disabled` stop the device, `wipe_required` (with
 * `mode`) asks it to wipe. Plain ES module, no dependencies; tokens live in a pluggable store (use the
 * platform's secure storage in an app; never in the synced database).
 */

const STOP_CODES = new Set(['device_revoked', 'device_wiped', 'user_disabled', 'refresh_token_reused',
  'refresh_token_invalid', 'device_unknown']);
// refreshed once and retried: an expired token, or one the gateway no longer accepts (a rotated secret)
const REFRESH_CODES = new Set(['token_expired', 'token_invalid']);
const WIPE_HEADER = 'x-sync-wipe-required';

export class EdgeError extends Error {
  constructor(status, code, reason, extra = {}) {
    super(reason || code);
    this.name = code || 'edge_error';
    this.status = status;
    this.code = code;
    Object.assign(this, extra);
  }
}

/** A store kept in memory: enough for tests and for apps that enrol at every start. */
export function memoryStore(initial = {}) {
  const data = new Map(Object.entries(initial));
  return {
    async get(key) { return data.has(key) ? data.get(key) : null; },
    async set(key, value) { data.set(key, value); },
  };
}

async function readError(response) {
  try {
    const body = await response.clone().json();
    return body && typeof body === 'object' ? body : {};
  } catch (e) {
    return {};
  }
}

function proofBody(proof) {
  if (proof.code) return { code: proof.code };
  const idToken = proof.idToken || proof.id_token;
  if (idToken) return { id_token: idToken };
  return { user: proof.user, password: proof.password };
}

export class EdgeClient {
  /**
   * @param {object} options
   * @param {string} options.url  the edge's base URL, e.g. https://sync.example.com (devices use `${url}/sync/`)
   * @param {Function} [options.fetch]  the platform's fetch
   * @param {object} [options.store]  `{get(key), set(key, value)}`, async
   * @param {Function} [options.now]  clock in ms (tests)
   */
  constructor({ url, fetch: fetchFn = globalThis.fetch, store = memoryStore(), now = () => Date.now(), refreshSkewMs = 30000 }) {
    this.url = url.replace(/\/+$/, '');
    this._fetch = fetchFn;
    this._store = store;
    this._now = now;
    this._skew = refreshSkewMs;
    this._listeners = new Map();
    this._refreshing = null;
    this.session = null; // {device_id, user, access_token, expires_at, refresh_token}
    this.state = 'unenrolled'; // active | revoked | wipe_required | wiped
    this.stopCode = null;
    this.wipeMode = null;
    this.lastContactAt = null;
    this.fetch = this.fetch.bind(this);
  }

  /** Load a saved session (after an app restart). */
  async load() {
    this.session = await this._store.get('session');
    this.state = (await this._store.get('state')) || (this.session ? 'active' : 'unenrolled');
    this.wipeMode = await this._store.get('wipe_mode');
    this.lastContactAt = await this._store.get('last_contact_at');
    return this;
  }

  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this._listeners.get(event).delete(listener);
  }

  _emit(event, ...args) {
    for (const listener of this._listeners.get(event) || []) {
      try { listener(...args); } catch (e) { /* a listener's failure is its own */ }
    }
  }

  get deviceId() { return this.session ? this.session.device_id : null; }

  /** The remote database for PouchDB: the device's own user database behind the edge. */
  remote(PouchDB, options = {}) {
    return new PouchDB(`${this.url}/sync/`, { ...options, fetch: this.fetch, skip_setup: true });
  }

  /**
   * Enrol with `{user, password}`, `{code}` (a one-time code an admin issued) or `{idToken}` (an OpenID Connect
   * ID token the app got from the gateway's configured issuer, e.g. with AppAuth; its audience must be the app's
   * client id). `device` is `{name, platform, appVersion}`.
   */
  async enrol(proof, device = {}) {
    const body = {
      device_name: device.name || '', platform: device.platform || '', app_version: device.appVersion || '',
      ...proofBody(proof),
    };
    const session = await this._post('/sync/_enrol', body);
    await this._setSession(session);
    await this._setState('active', null, null);
    await this._contact();
    return { device_id: session.device_id, user: session.user };
  }

  /** A valid access token, refreshed first when it expires within the skew. */
  async accessToken() {
    if (!this.session) throw new EdgeError(401, 'not_enrolled', 'enrol the device first');
    if (this.session.expires_at * 1000 - this._skew <= this._now()) await this.refresh();
    return this.session.access_token;
  }

  /** Trade the refresh token for new tokens; concurrent callers share one exchange. */
  refresh() {
    if (!this._refreshing) {
      this._refreshing = (async () => {
        try {
          const session = await this._post('/sync/_token', { refresh_token: this.session.refresh_token });
          await this._setSession(session);
        } catch (err) {
          if (err instanceof EdgeError && STOP_CODES.has(err.code)) await this._stop(err);
          throw err;
        }
      })().finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  /** Tell the edge the local database is destroyed (after a wipe). */
  async confirmWipe() {
    const response = await this._authorised(`${this.url}/sync/_wipe`, { method: 'POST', body: '{}',
      headers: { 'Content-Type': 'application/json' } });
    if (!response.ok) {
      const info = await readError(response);
      throw new EdgeError(response.status, info.code, info.reason);
    }
    await this._setState('wiped', null, null);
    this.session = null;
    await this._store.set('session', null);
    this._emit('wiped');
    return response.json();
  }

  /** The fetch PouchDB calls: auth, one refresh on `token_expired`/`token_invalid`, and the edge's codes. */
  async fetch(input, init = {}) {
    if (this.state === 'revoked' || this.state === 'wiped') {
      const body = JSON.stringify({ error: 'unauthorized', reason: 'this device may not sync', code: this.stopCode || this.state });
      return new Response(body, { status: 401, headers: { 'Content-Type': 'application/json' } });
    }
    let response = await this._authorised(input, init);
    if (response.status === 401) {
      let info = await readError(response);
      if (REFRESH_CODES.has(info.code)) {
        try {
          await this.refresh();
        } catch (err) {
          return response;
        }
        response = await this._authorised(input, init);
        info = response.status === 401 ? await readError(response) : {};
      }
      if (info.code === 'wipe_required') {
        await this._wipeRequired(info.mode);
      } else if (STOP_CODES.has(info.code)) {
        await this._stop(new EdgeError(401, info.code, info.reason));
      }
      return response;
    }
    const wipe = response.headers.get(WIPE_HEADER);
    if (wipe) await this._wipeRequired(wipe);
    if (response.status < 500) await this._contact();
    return response;
  }

  async _authorised(input, init) {
    const token = await this.accessToken();
    const headers = new Headers(init.headers || {});
    headers.set('Authorization', `Bearer ${token}`);
    return this._fetch(input, { ...init, headers });
  }

  async _post(path, body) {
    const response = await this._fetch(`${this.url}${path}`, {
      method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    });
    const data = await readError(response);
    if (!response.ok) {
      const { error, reason, code, ...extra } = data;
      throw new EdgeError(response.status, code || error, reason, extra);
    }
    return data;
  }

  async _setSession(session) {
    this.session = {
      device_id: session.device_id, user: session.user, access_token: session.access_token,
      expires_at: session.expires_at, refresh_token: session.refresh_token,
    };
    await this._store.set('session', this.session);
  }

  async _setState(state, code, mode) {
    this.state = state;
    this.stopCode = code;
    this.wipeMode = mode;
    await this._store.set('state', state);
    await this._store.set('wipe_mode', mode);
  }

  async _stop(err) {
    if (this.state === 'revoked' || this.state === 'wiped') return;
    await this._setState(err.code === 'device_wiped' ? 'wiped' : 'revoked', err.code, null);
    this._emit('revoked', err.code);
  }

  async _wipeRequired(mode) {
    if (this.state === 'wipe_required' || this.state === 'wiped') return;
    await this._setState('wipe_required', 'wipe_required', mode);
    this._emit('wipe_required', mode);
  }

  async _contact() {
    this.lastContactAt = this._now();
    await this._store.set('last_contact_at', this.lastContactAt);
  }
}
