#!/usr/bin/env node
'use strict';
/*
 * A scripted PouchDB "device" for the integration tests.
 *
 * Speaks JSON lines: one request per stdin line `{"id": n, "op": "...", ...args}`,
 * where `id` is the request id, so a document id is passed as `doc_id`;
 * one response per stdout line `{"id": n, "ok": true, "result": ...}` or
 * `{"id": n, "ok": false, "error": {"name", "message", "status"}}`. Requests run
 * concurrently; responses come back in completion order, matched by `id`.
 *
 * Any number of named local databases (memory adapter) live in one process, so one
 * process can play several phones. Nothing is persisted.
 *
 * stdout carries protocol lines only; stderr carries short diagnostics that never
 * include document bodies or credentials.
 */

const readline = require('readline');
const PouchDB = require('pouchdb-node');
PouchDB.plugin(require('pouchdb-adapter-memory'));

const LocalDB = PouchDB.defaults({ adapter: 'memory' });

const dbs = new Map(); // name -> PouchDB (memory)
const syncs = new Map(); // handle -> { sync, state }
let nextHandle = 1;
// edge mode: devices that enrol with the gateway's edge and sync through it with clients/js
const edgeModule = import('../../clients/js/index.mjs');
const edgeClients = new Map(); // client name -> EdgeClient
const edgeSyncs = new Map(); // handle -> { sync: EdgeSync, localName }
let shuttingDown = false;

class DeviceFailure extends Error {
  constructor(name, message, status, extra) {
    super(message);
    this.name = name;
    this.status = status;
    this.extra = extra || {};
  }
}

function log(msg) {
  process.stderr.write(`[device ${process.pid}] ${msg}\n`);
}

function send(obj) {
  process.stdout.write(`${JSON.stringify(obj, jsonReplacer)}\n`);
}

// Buffers (attachments in Node) become base64 so responses stay JSON.
function jsonReplacer(key, value) {
  if (value && value.type === 'Buffer' && Array.isArray(value.data)) {
    return Buffer.from(value.data).toString('base64');
  }
  return value;
}

function requireArg(args, name) {
  if (args[name] === undefined || args[name] === null) {
    throw new DeviceFailure('bad_request', `missing argument '${name}'`, 400);
  }
  return args[name];
}

function localDb(args) {
  const name = requireArg(args, 'db');
  let db = dbs.get(name);
  if (!db) {
    db = new LocalDB(name);
    dbs.set(name, db);
  }
  return db;
}

function stripCredentials(url) {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch (e) {
    throw new DeviceFailure('bad_request', 'remote_url is not a valid URL', 400);
  }
}

function remoteDb(args) {
  const url = stripCredentials(requireArg(args, 'remote_url'));
  const opts = { skip_setup: true }; // never PUT /db from a device: the server creates DBs
  if (args.username !== undefined && args.username !== null) {
    opts.auth = { username: args.username, password: args.password || '' };
  }
  return new PouchDB(url, opts);
}

function summarise(result) {
  if (!result) return result;
  const pick = (r) =>
    r && {
      ok: r.ok,
      status: r.status,
      docs_read: r.docs_read,
      docs_written: r.docs_written,
      doc_write_failures: r.doc_write_failures,
      errors: (r.errors || []).map(errorInfo),
      last_seq: r.last_seq,
    };
  if (result.push || result.pull) {
    const push = pick(result.push);
    const pull = pick(result.pull);
    const parts = [push, pull].filter(Boolean);
    return {
      ok: parts.every((p) => p.ok !== false) && parts.every((p) => p.errors.length === 0),
      docs_read: parts.reduce((n, p) => n + (p.docs_read || 0), 0),
      docs_written: parts.reduce((n, p) => n + (p.docs_written || 0), 0),
      doc_write_failures: parts.reduce((n, p) => n + (p.doc_write_failures || 0), 0),
      errors: parts.flatMap((p) => p.errors),
      push: push || null,
      pull: pull || null,
    };
  }
  return pick(result);
}

function errorInfo(err) {
  if (!err || typeof err !== 'object') {
    return { name: 'error', message: String(err), status: 500 };
  }
  const status = typeof err.status === 'number' ? err.status : 500;
  let name = err.name && err.name !== 'Error' ? err.name : err.error || 'error';
  let message = err.message || err.reason || String(err);
  if (typeof message !== 'string') message = JSON.stringify(message);
  // CouchDB 3.4+ locks an account after repeated failed logins: say so, not just "forbidden"
  if (status === 403 && /temporarily locked/i.test(message)) name = 'account_locked';
  return { name: String(name), message, status };
}

function withTimeout(promise, ms, onTimeout) {
  if (!ms) return promise;
  let timer;
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        onTimeout();
      } finally {
        reject(new DeviceFailure('timeout', `operation did not finish within ${ms} ms`, 408));
      }
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

function matches(doc, predicate) {
  if (!doc) return false;
  if (doc._deleted && !Object.prototype.hasOwnProperty.call(predicate, '_deleted')) return false;
  return Object.keys(predicate).every((k) => deepEqual(doc[k], predicate[k]));
}

const ops = {
  async open(args) {
    return localDb(args).info();
  },

  async info(args) {
    return localDb(args).info();
  },

  async put(args) {
    const res = await localDb(args).put(requireArg(args, 'doc'));
    return { id: res.id, rev: res.rev };
  },

  async bulk(args) {
    return localDb(args).bulkDocs(requireArg(args, 'docs'), args.opts || {});
  },

  async get(args) {
    return localDb(args).get(requireArg(args, 'doc_id'), args.opts || {});
  },

  async remove(args) {
    const res = await localDb(args).remove(requireArg(args, 'doc_id'), requireArg(args, 'rev'));
    return { id: res.id, rev: res.rev };
  },

  async put_attachment(args) {
    const data = Buffer.from(requireArg(args, 'data_base64'), 'base64');
    const res = await localDb(args).putAttachment(
      requireArg(args, 'doc_id'),
      requireArg(args, 'name'),
      args.rev || undefined,
      data,
      requireArg(args, 'content_type'),
    );
    return { id: res.id, rev: res.rev };
  },

  async get_attachment(args) {
    const data = await localDb(args).getAttachment(requireArg(args, 'doc_id'), requireArg(args, 'name'));
    return Buffer.from(data).toString('base64');
  },

  async all_docs(args) {
    return localDb(args).allDocs(args.opts || {});
  },

  async changes(args) {
    const opts = Object.assign({}, args.opts || {});
    if (opts.live) throw new DeviceFailure('bad_request', 'changes is one-shot; use wait_for', 400);
    return localDb(args).changes(opts);
  },

  async replicate(args) {
    const local = localDb(args);
    const remote = remoteDb(args);
    const direction = args.direction || 'both';
    const opts = { retry: false };
    if (args.batch_size) opts.batch_size = args.batch_size; // PouchDB's default: 100 per batch
    let rep;
    if (direction === 'push') rep = PouchDB.replicate(local, remote, opts);
    else if (direction === 'pull') rep = PouchDB.replicate(remote, local, opts);
    else if (direction === 'both') rep = PouchDB.sync(local, remote, opts);
    else throw new DeviceFailure('bad_request', `unknown direction '${direction}'`, 400);
    try {
      const result = await withTimeout(rep, args.timeout_ms || 0, () => rep.cancel());
      return summarise(result);
    } catch (err) {
      if (err instanceof DeviceFailure) throw err;
      const info = errorInfo(err);
      // A failed replication reports the HTTP error of the request that failed.
      const result = err && err.result ? summarise(err.result) : null;
      throw new DeviceFailure(
        info.name,
        `replication ${direction} failed: ${info.message}`,
        info.status,
        result ? { result } : {},
      );
    } finally {
      await remote.close().catch(() => {});
    }
  },

  async sync_live(args) {
    const local = localDb(args);
    const remote = remoteDb(args);
    const handle = `sync-${nextHandle++}`;
    const state = { state: 'starting', last_error: null, docs_written: 0, docs_read: 0 };
    const sync = PouchDB.sync(local, remote, {
      live: true,
      retry: true,
      back_off_function: (delay) => Math.min(delay === 0 ? 200 : delay * 2, 2000),
    });
    sync
      .on('change', (info) => {
        state.docs_written += (info.change && info.change.docs_written) || 0;
        state.docs_read += (info.change && info.change.docs_read) || 0;
      })
      .on('active', () => {
        state.state = 'active';
      })
      .on('paused', (err) => {
        state.state = 'paused';
        if (err) state.last_error = errorInfo(err);
      })
      .on('denied', (err) => {
        state.last_error = errorInfo(err);
      })
      .on('error', (err) => {
        state.state = 'error';
        state.last_error = errorInfo(err);
      })
      .on('complete', () => {
        if (state.state !== 'error') state.state = 'stopped';
      });
    // The sync object is also a promise; keep its rejection from becoming unhandled.
    const done = Promise.resolve(sync).catch(() => {});
    syncs.set(handle, { sync, state, remote, done, localName: args.db });
    return handle;
  },

  async sync_status(args) {
    const entry = syncs.get(requireArg(args, 'handle'));
    if (!entry) throw new DeviceFailure('not_found', 'unknown sync handle', 404);
    return entry.state;
  },

  async sync_stop(args) {
    const handle = requireArg(args, 'handle');
    const entry = syncs.get(handle);
    if (!entry) throw new DeviceFailure('not_found', 'unknown sync handle', 404);
    await stopSync(handle, entry);
    return entry.state;
  },

  async wait_for(args) {
    const db = localDb(args);
    const id = requireArg(args, 'doc_id');
    const predicate = args.predicate || {};
    const timeoutMs = args.timeout_ms || 20000;
    let lastDoc = null;
    return new Promise((resolve, reject) => {
      let finished = false;
      // since 0 + doc_ids: the first result is the current winning revision, then every
      // later change; no window between "read" and "subscribe".
      const feed = db.changes({ live: true, since: 0, include_docs: true, doc_ids: [id] });
      const finish = (fn, value) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        feed.cancel();
        fn(value);
      };
      const timer = setTimeout(() => {
        const seen = lastDoc === null ? 'the document never appeared' : `last seen: ${JSON.stringify(lastDoc)}`;
        finish(
          reject,
          new DeviceFailure(
            'timeout',
            `doc '${id}' did not match ${JSON.stringify(predicate)} within ${timeoutMs} ms; ${seen}`,
            408,
            { last_doc: lastDoc },
          ),
        );
      }, timeoutMs);
      feed.on('change', (change) => {
        lastDoc = change.doc || null;
        if (matches(change.doc, predicate)) finish(resolve, change.doc);
      });
      feed.on('error', (err) => finish(reject, err));
    });
  },

  async destroy(args) {
    const name = requireArg(args, 'db');
    const db = localDb(args);
    for (const [handle, entry] of syncs) {
      if (entry.localName === name) await stopSync(handle, entry);
    }
    dbs.delete(name);
    await db.destroy();
    return { ok: true };
  },

  async edge_enrol(args) {
    const { EdgeClient } = await edgeModule;
    const name = requireArg(args, 'client');
    // PouchDB's own fetch (node-fetch) under the wrapper: its attachment reads expect response.buffer()
    const client = new EdgeClient({ url: requireArg(args, 'url'), fetch: PouchDB.fetch });
    const proof = args.code ? { code: args.code }
      : args.id_token ? { idToken: args.id_token }
        : { user: requireArg(args, 'user'), password: args.password || '' };
    const result = await client.enrol(proof, { name: args.device_name || name, platform: args.platform || 'node' });
    client.on('wiped', () => {
      for (const entry of edgeSyncs.values()) if (entry.client === client) dbs.delete(entry.localName);
    });
    edgeClients.set(name, client);
    return result;
  },

  async edge_session(args) {
    const client = edgeClient(args);
    return { session: client.session, state: client.state, stop_code: client.stopCode, wipe_mode: client.wipeMode,
      last_contact_at: client.lastContactAt };
  },

  async edge_replicate(args) {
    const { performWipe } = await edgeModule;
    const client = edgeClient(args);
    const local = localDb(args);
    const remote = client.remote(PouchDB);
    const direction = args.direction || 'both';
    const opts = { retry: false };
    if (args.batch_size) opts.batch_size = args.batch_size; // PouchDB's default: 100 per batch
    let rep;
    if (direction === 'push') rep = PouchDB.replicate(local, remote, opts);
    else if (direction === 'pull') rep = PouchDB.replicate(remote, local, opts);
    else rep = PouchDB.sync(local, remote, opts);
    let summary = null;
    let failure = null;
    try {
      summary = summarise(await withTimeout(rep, args.timeout_ms || 0, () => rep.cancel()));
    } catch (err) {
      if (err instanceof DeviceFailure) throw err;
      failure = errorInfo(err);
    } finally {
      await remote.close().catch(() => {});
    }
    if (client.state === 'wipe_required') {
      const mode = client.wipeMode;
      await performWipe({ client, PouchDB, local, mode });
      dbs.delete(requireArg(args, 'db'));
      return { wiped: true, mode, state: client.state, summary };
    }
    if (failure) {
      throw new DeviceFailure(failure.name, `replication ${direction} failed: ${failure.message}`, failure.status,
        { state: client.state, stop_code: client.stopCode });
    }
    return summary;
  },

  async edge_sync_live(args) {
    const { EdgeSync } = await edgeModule;
    const client = edgeClient(args);
    const handle = `edge-sync-${nextHandle++}`;
    const sync = new EdgeSync({ client, PouchDB, local: localDb(args) }).start();
    edgeSyncs.set(handle, { sync, client, localName: requireArg(args, 'db') });
    return handle;
  },

  async edge_sync_status(args) {
    const entry = edgeSyncs.get(requireArg(args, 'handle'));
    if (!entry) throw new DeviceFailure('not_found', 'unknown sync handle', 404);
    return entry.sync.status;
  },

  async edge_sync_stop(args) {
    const handle = requireArg(args, 'handle');
    const entry = edgeSyncs.get(handle);
    if (!entry) throw new DeviceFailure('not_found', 'unknown sync handle', 404);
    edgeSyncs.delete(handle);
    if (entry.sync._wiping) await entry.sync._wiping.catch(() => {});
    await entry.sync.stop();
    entry.sync.dispose();
    return entry.sync.status;
  },

  async edge_policy(args) {
    const { enforceOfflinePolicy } = await edgeModule;
    const client = edgeClient(args);
    const verdict = await enforceOfflinePolicy({ local: localDb(args), client, now: args.now_ms || Date.now() });
    if (verdict.action === 'wipe') dbs.delete(requireArg(args, 'db'));
    return verdict;
  },

  async shutdown() {
    shuttingDown = true;
    await closeEverything();
    return { ok: true };
  },
};

function edgeClient(args) {
  const client = edgeClients.get(requireArg(args, 'client'));
  if (!client) throw new DeviceFailure('not_found', 'unknown edge client: enrol it first (edge_enrol)', 404);
  return client;
}

async function stopSync(handle, entry) {
  syncs.delete(handle);
  entry.sync.cancel();
  await entry.done;
  await entry.remote.close().catch(() => {});
  if (entry.state.state !== 'error') entry.state.state = 'stopped';
}

async function closeEverything() {
  for (const [handle, entry] of Array.from(edgeSyncs)) {
    edgeSyncs.delete(handle);
    await entry.sync.stop().catch(() => {});
  }
  for (const [handle, entry] of Array.from(syncs)) {
    await stopSync(handle, entry);
  }
  for (const db of dbs.values()) {
    await db.close().catch(() => {});
  }
  dbs.clear();
}

async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    log('ignored a line that is not JSON');
    return;
  }
  const id = req.id;
  const fn = Object.prototype.hasOwnProperty.call(ops, req.op) ? ops[req.op] : null;
  try {
    if (!fn) throw new DeviceFailure('bad_request', `unknown op '${req.op}'`, 400);
    if (shuttingDown && req.op !== 'shutdown') {
      throw new DeviceFailure('shutting_down', 'device is shutting down', 503);
    }
    const result = await fn(req);
    send({ id, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    const info = errorInfo(err);
    const error = Object.assign(info, err instanceof DeviceFailure ? err.extra : {});
    // The message may quote a document (wait_for); stderr gets the kind of failure only.
    log(`op ${req.op} failed: ${info.name} (${info.status})`);
    send({ id, ok: false, error });
  }
  if (req.op === 'shutdown') {
    // Let stdout flush, then leave even if some remote socket lingers.
    process.stdout.write('', () => process.exit(0));
  }
}

process.on('unhandledRejection', (err) => {
  const info = errorInfo(err);
  log(`unhandled rejection: ${info.name} (${info.status}): ${info.message}`);
});

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on('line', (line) => {
  if (line.trim()) handle(line);
});
rl.on('close', () => {
  // stdin closed without a shutdown: the test process went away.
  closeEverything().finally(() => process.exit(0));
});
