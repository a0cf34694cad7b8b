/** `noop`: succeeds at once. For routes that only record that an event matched, and for benchmarks. */

import type { ActionType } from '../../core/action.js';

export const noopAction: ActionType = {
  type: 'noop',
  sideEffects: false,
  paramsSchema: { type: 'object', additionalProperties: false, properties: {} },
  create() {
    return { execute: async () => ({ status: 'success' }) };
  },
};
