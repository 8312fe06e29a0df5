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
const RULES = path.join(ROOT, 'sync_gateway', 'schemas', 'rules');

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

// Reference conversions of document values into rule inputs (see sync_gateway/rules/README.md, "Money"):
// by string, never through a float multiplication.
function moneyToE4(amount) {
  const match = /^(-?)([0-9]+)(?:\.([0-9]{1,4}))?$/.exec(String(amount));
  if (!match) return null;
  const value = Number(match[2]) * 10000 + Number((match[3] || '').padEnd(4, '0'));
  return match[1] ? -value : value;
}

function percentToBp(percent) {
  if (percent === null || percent === undefined) return 0;
  const match = /^([0-9]+)(?:\.([0-9]+))?$/.exec(String(percent));
  if (!match) return null;
  const fraction = (match[2] || '').padEnd(3, '0');
  const thousandths = Number(match[1]) * 1000 + Number(fraction.slice(0, 2)) * 10 + Number(fraction[2]);
  return Math.floor((thousandths + 5) / 10);
}

const conversions = JSON.parse(fs.readFileSync(path.join(__dirname, 'conversions.json'), 'utf8'));
for (const [input, expected] of conversions.money_to_e4) {
  test(`conversions: money ${JSON.stringify(input)} -> ${expected}`, () => {
    assert.equal(moneyToE4(input), expected);
  });
}
for (const [input, expected] of conversions.percent_to_bp) {
  test(`conversions: percent ${JSON.stringify(input)} -> ${expected}`, () => {
    assert.equal(percentToBp(input), expected);
  });
}
