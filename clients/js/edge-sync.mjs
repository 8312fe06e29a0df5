/*
 * A live two-way sync through the edge that obeys the gateway: on `device_revoked` it stops for good; on
 * `wipe_required` it stops, pushes what the device has when the mode is `push_then_wipe`, destroys the local
 * database and confirms the wipe (`POST /sync/_wipe`).
 */

export async function performWipe({ client, PouchDB, local, mode }) {
  if (mode === 'push_then_wipe') {
    const remote = client.remote(PouchDB);
    try {
      await PouchDB.replicate(local, remote, { retry: false });
    } finally {
      await remote.close().catch(() => {});
    }
  }
  await local.destroy();
  return client.confirmWipe();
}

export class EdgeSync {
  /**
   * @param {number} [options.pullBatchSize]  documents per batch the device pulls (PouchDB's `batch_size`; 500
   *   here, PouchDB's own default is 100). Each batch costs about five round trips, so a field app's first sync of
   *   thousands of master-data documents over a mobile network is mostly waiting: 500 makes 10,000 documents
   *   ~107 requests instead of ~507. Master data is small; 0 leaves PouchDB's default.
   * @param {number} [options.batchSize]  documents per batch the device pushes (default: PouchDB's 100). Pushed
   *   transactions can carry signatures and photos, and one batch is one request body at the edge (its limit).
   */
  constructor({ client, PouchDB, local, backOffMs = 2000, batchSize = undefined, pullBatchSize = 500 }) {
    this.client = client;
    this.PouchDB = PouchDB;
    this.local = local;
    this.backOffMs = backOffMs;
    this.batchSize = batchSize;
    this.pullBatchSize = pullBatchSize;
    this.status = { state: 'starting', stop_code: null, last_error: null, docs_read: 0, docs_written: 0 };
    this._sync = null;
    this._remote = null;
    this._wiping = null;
    this._unsubscribe = [
      client.on('revoked', (code) => this._revoked(code)),
      client.on('wipe_required', (mode) => { this.wipe(mode).catch(() => {}); }),
    ];
  }

  start() {
    this._remote = this.client.remote(this.PouchDB);
    const status = this.status;
    this._sync = this.PouchDB.sync(this.local, this._remote, {
      live: true,
      retry: true,
      back_off_function: (delay) => Math.min(delay === 0 ? 200 : delay * 2, this.backOffMs),
      ...(this.batchSize ? { batch_size: this.batchSize } : {}),
      ...(this.pullBatchSize ? { pull: { batch_size: this.pullBatchSize } } : {}),
    });
    this._sync
      .on('change', (info) => {
        status.docs_written += (info.change && info.change.docs_written) || 0;
        status.docs_read += (info.change && info.change.docs_read) || 0;
      })
      .on('active', () => { if (status.state === 'starting' || status.state === 'paused') status.state = 'active'; })
      .on('paused', (err) => {
        if (status.state === 'active' || status.state === 'starting') status.state = 'paused';
        if (err) status.last_error = { name: err.name, status: err.status, message: err.message };
      })
      .on('error', (err) => {
        if (['revoked', 'wiping', 'wiped'].includes(status.state)) return; // the gateway's word stands
        status.state = 'error';
        status.last_error = { name: err.name, status: err.status, message: err.message };
      });
    this._done = Promise.resolve(this._sync).catch(() => {});
    return this;
  }

  async stop(state = 'stopped') {
    if (this._sync) {
      this._sync.cancel();
      await this._done;
      this._sync = null;
    }
    if (this._remote) {
      await this._remote.close().catch(() => {});
      this._remote = null;
    }
    if (state !== 'stopped' || !['revoked', 'wiping', 'wiped', 'error'].includes(this.status.state)) {
      this.status.state = state;
    }
    return this.status;
  }

  dispose() {
    for (const off of this._unsubscribe) off();
  }

  _revoked(code) {
    this.status.stop_code = code;
    this.status.last_error = { name: code, status: 401, message: 'the gateway cut this device off' };
    this.stop('revoked').catch(() => {});
  }

  wipe(mode) {
    if (!this._wiping) {
      this._wiping = (async () => {
        this.status.state = 'wiping';
        this.status.stop_code = 'wipe_required';
        await this.stop('wiping');
        try {
          await performWipe({ client: this.client, PouchDB: this.PouchDB, local: this.local, mode });
          this.status.state = 'wiped';
        } catch (err) {
          this.status.state = 'error';
          this.status.last_error = { name: err.name, status: err.status, message: err.message };
          throw err;
        }
      })();
    }
    return this._wiping;
  }
}
