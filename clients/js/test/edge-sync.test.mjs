import { test } from 'node:test';
import assert from 'node:assert/strict';

import { EdgeSync } from '../edge-sync.mjs';

// PouchDB.sync as far as EdgeSync uses it: records the options, never ends on its own
function fakePouchDB() {
  const seen = [];
  const PouchDB = {
    seen,
    sync(local, remote, options) {
      seen.push(options);
      const handle = { on() { return handle; }, cancel() {}, then(resolve) { resolve({}); } };
      return handle;
    },
  };
  return PouchDB;
}

const client = { on: () => () => {}, remote: () => ({ close: async () => {} }) };

test('a live sync pulls 500 documents per batch and pushes PouchDB\'s default unless told otherwise', () => {
  const PouchDB = fakePouchDB();
  new EdgeSync({ client, PouchDB, local: {}, batchSize: 50 }).start();
  new EdgeSync({ client, PouchDB, local: {} }).start();
  new EdgeSync({ client, PouchDB, local: {}, pullBatchSize: 0 }).start();
  assert.equal(PouchDB.seen[0].batch_size, 50);
  assert.deepEqual(PouchDB.seen[0].pull, { batch_size: 500 });
  assert.equal('batch_size' in PouchDB.seen[1], false);
  assert.deepEqual(PouchDB.seen[1].pull, { batch_size: 500 });
  assert.equal('pull' in PouchDB.seen[2], false);
  assert.equal(PouchDB.seen[0].live, true);
});
