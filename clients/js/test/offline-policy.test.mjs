import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import { enforceOfflinePolicy, evaluateOfflinePolicy } from '../offline-policy.mjs';

const require = createRequire(import.meta.url);
const PouchDB = require('pouchdb-node');
PouchDB.plugin(require('pouchdb-adapter-memory'));

const DAY = 24 * 3600 * 1000;
const policy = { _id: 'config:device_policy', lock_after_days: 7, wipe_after_days: 30 };

test('the verdict follows the days since the last contact', () => {
  const now = Date.UTC(2026, 0, 31);
  assert.equal(evaluateOfflinePolicy(policy, now - 2 * DAY, now).action, 'ok');
  assert.equal(evaluateOfflinePolicy(policy, now - 7 * DAY, now).action, 'lock');
  assert.equal(evaluateOfflinePolicy(policy, now - 31 * DAY, now).action, 'wipe');
  assert.equal(evaluateOfflinePolicy(null, now - 99 * DAY, now).action, 'ok');
  assert.equal(evaluateOfflinePolicy(policy, null, now).action, 'ok');
});

test('past wipe_after_days the local database is destroyed; before it, it stays', async () => {
  const now = Date.UTC(2026, 0, 31);
  const local = new PouchDB(`policy-${Math.random()}`, { adapter: 'memory' });
  await local.put(policy);
  await local.put({ _id: 'sales_order:1', status: 'submitted' });
  const locked = await enforceOfflinePolicy({ local, client: { lastContactAt: now - 8 * DAY }, now });
  assert.equal(locked.action, 'lock');
  assert.equal((await local.info()).doc_count, 2);
  const wiped = await enforceOfflinePolicy({ local, client: { lastContactAt: now - 40 * DAY }, now });
  assert.equal(wiped.action, 'wipe');
  const reopened = new PouchDB(local.name, { adapter: 'memory' });
  assert.equal((await reopened.info()).doc_count, 0);
});
