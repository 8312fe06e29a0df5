// The shared rule vectors through json-logic-js, the evaluator devices use: `node --test tests/rules/`.
// The gateway runs the same vectors through its Python evaluator (tests/unit/rules/test_vectors.py).
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const jsonLogic = require('json-logic-js');

const ROOT = path.resolve(__dirname, '..', '..');
const VECTORS = path.join(__dirname, 'vectors');
const RULES = path.join(ROOT, 'schemas', 'rules');

// How a device evaluates a rule set: rules in order, each result added to the data under its name.
function evaluateUntil(ruleSet, data, until) {
  const scope = { ...data };
  for (const rule of ruleSet.rules) {
    scope[rule.name] = jsonLogic.apply(rule.logic, scope);
    if (rule.name === until) return scope[rule.name];
  }
  throw new Error(`rule set ${ruleSet.name} has no rule ${until}`);
}

const files = fs.readdirSync(VECTORS).filter((name) => name.endsWith('.json')).sort();

test('there are vector files', () => {
  assert.ok(files.length >= 4, `only ${files.length} vector files`);
});

for (const file of files) {
  const suite = JSON.parse(fs.readFileSync(path.join(VECTORS, file), 'utf8'));
  const ruleSet = suite.rule_set
    ? JSON.parse(fs.readFileSync(path.join(RULES, `${suite.rule_set}.json`), 'utf8'))
    : null;
  if (ruleSet) {
    test(`${file}: vectors are for version ${ruleSet.version} of ${ruleSet.name}`, () => {
      assert.equal(suite.version, ruleSet.version);
    });
  }
  for (const vector of suite.vectors) {
    test(`${file}: ${vector.name}`, () => {
      const actual = ruleSet
        ? evaluateUntil(ruleSet, vector.data, vector.rule)
        : jsonLogic.apply(vector.logic, vector.data);
      assert.deepEqual(actual, vector.expected);
    });
  }
}
