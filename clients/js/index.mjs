export { EdgeClient, EdgeError, memoryStore } from './edge-client.mjs';
export { EdgeSync, performWipe } from './edge-sync.mjs';
export { enforceOfflinePolicy, evaluateOfflinePolicy } from './offline-policy.mjs';
