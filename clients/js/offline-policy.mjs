/*
 * The offline policy a device enforces by itself: the server-owned `config:device_policy` document
 * (replicated into the local database) says after how many days without contact with the gateway the app
 * locks, and after how many it destroys its local data. Contact = the last successful edge response.
 */

const DAY_MS = 24 * 3600 * 1000;

/** `{action: 'ok' | 'lock' | 'wipe', offline_days}` for a policy, the last contact (ms) and now (ms). */
export function evaluateOfflinePolicy(policy, lastContactAt, now) {
  if (!policy || lastContactAt === null || lastContactAt === undefined) return { action: 'ok', offline_days: 0 };
  const offlineDays = Math.max(0, (now - lastContactAt) / DAY_MS);
  if (Number.isFinite(policy.wipe_after_days) && offlineDays >= policy.wipe_after_days) {
    return { action: 'wipe', offline_days: offlineDays };
  }
  if (Number.isFinite(policy.lock_after_days) && offlineDays >= policy.lock_after_days) {
    return { action: 'lock', offline_days: offlineDays };
  }
  return { action: 'ok', offline_days: offlineDays };
}

/**
 * Read the policy from the local database and act on it: `wipe` destroys the local database (the gateway is
 * told at the next contact, when it asks). Returns the verdict; the app shows a lock screen on `lock`.
 */
export async function enforceOfflinePolicy({ local, client, now = Date.now() }) {
  let policy = null;
  try {
    policy = await local.get('config:device_policy');
  } catch (err) {
    if (err.status !== 404) throw err;
  }
  const verdict = evaluateOfflinePolicy(policy, client.lastContactAt, now);
  if (verdict.action === 'wipe') await local.destroy();
  return verdict;
}
