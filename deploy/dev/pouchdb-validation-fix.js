'use strict';
// Preloaded into the dev/test pouchdb-server (node --require). Works around a pouchdb-validation bug:
// before running validate_doc_update it overwrites each incoming document's `_revisions` with the stored
// document's, so a replicated edit (`_bulk_docs` with new_edits=false) of an existing document is silently
// turned into a no-op. CouchDB 3 has no such bug. We keep every document's own `_revisions` aside before
// validation and put it back just before the write, leaving validation itself untouched.
const Module = require('module');

const originalLoad = Module._load;
const kept = new WeakMap();

function docsOf(first) {
  if (Array.isArray(first)) return first;
  if (first && Array.isArray(first.docs)) return first.docs;
  return [];
}

function keep(args) {
  for (const doc of docsOf(args[0])) {
    if (doc && typeof doc === 'object' && doc._revisions) {
      kept.set(doc, JSON.parse(JSON.stringify(doc._revisions)));
    }
  }
}

function restore(args) {
  for (const doc of docsOf(args[0])) {
    if (doc && typeof doc === 'object' && kept.has(doc)) {
      doc._revisions = kept.get(doc);
    }
  }
}

function patch(validation) {
  if (validation.__revisionsKept) return validation;
  const install = validation.installValidationMethods;
  validation.installValidationMethods = function installKeepingRevisions(...installArgs) {
    const db = this;
    const write = db.bulkDocs;
    db.bulkDocs = function bulkDocsRestoringRevisions(...args) {
      restore(args);
      return write.apply(this, args);
    };
    const result = install.apply(this, installArgs);
    const validating = db.bulkDocs;
    db.bulkDocs = function bulkDocsKeepingRevisions(...args) {
      keep(args);
      return validating.apply(this, args);
    };
    return result;
  };
  validation.__revisionsKept = true;
  return validation;
}

Module._load = function load(request, parent, isMain) {
  const exported = originalLoad.call(this, request, parent, isMain);
  return request === 'pouchdb-validation' ? patch(exported) : exported;
};
