// Hybrid logical clock for device apps: the JavaScript twin of conflict_handlers/hlc.py.
// Stamps look like "2024-05-01T12:34:56.789Z-000a-tablet-7" and compare as plain strings.
// Works in browsers, Cordova, React Native and Node (CommonJS export at the bottom). No dependencies.
"use strict";

const MAX_COUNTER = 0xffff;
const PATTERN = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)-([0-9a-f]{4})-([^\x00-\x1f\x7f]+)$/;

function format(wallMs, counter, deviceId) {
  return `${new Date(wallMs).toISOString()}-${counter.toString(16).padStart(4, "0")}-${deviceId}`;
}

function parse(text) {
  const match = typeof text === "string" ? PATTERN.exec(text) : null;
  if (!match) throw new Error(`not a hybrid logical clock timestamp: ${text}`);
  const wallMs = Date.parse(match[1]);
  if (Number.isNaN(wallMs) || new Date(wallMs).toISOString() !== match[1]) {
    throw new Error(`not a valid wall time: ${text}`);
  }
  return { wallMs, counter: parseInt(match[2], 16), deviceId: match[3] };
}

class HybridLogicalClock {
  constructor(deviceId, wallClock = Date.now) {
    if (!deviceId || /[\x00-\x1f\x7f]/.test(deviceId)) throw new Error("bad device id");
    this.deviceId = deviceId;
    this.wallClock = wallClock;
    this.wallMs = 0;
    this.counter = 0;
  }

  // A stamp for a local edit: put it in the document's `updated_at`.
  now() {
    const physical = this.wallClock();
    if (physical > this.wallMs) {
      this.wallMs = physical;
      this.counter = 0;
    } else {
      this.advance(this.wallMs, this.counter + 1);
    }
    return format(this.wallMs, this.counter, this.deviceId);
  }

  // Merge a stamp seen in a replicated document, so the next local stamp is later than it.
  receive(remote) {
    const other = parse(remote);
    const physical = this.wallClock();
    const wall = Math.max(physical, this.wallMs, other.wallMs);
    let counter;
    if (wall === this.wallMs && wall === other.wallMs) counter = Math.max(this.counter, other.counter) + 1;
    else if (wall === this.wallMs) counter = this.counter + 1;
    else if (wall === other.wallMs) counter = other.counter + 1;
    else counter = 0;
    this.advance(wall, counter);
    return format(this.wallMs, this.counter, this.deviceId);
  }

  advance(wallMs, counter) {
    if (counter > MAX_COUNTER) {
      this.wallMs = wallMs + 1;
      this.counter = 0;
    } else {
      this.wallMs = wallMs;
      this.counter = counter;
    }
  }
}

if (typeof module !== "undefined") module.exports = { HybridLogicalClock, format, parse, MAX_COUNTER };
