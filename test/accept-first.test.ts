/**
 * Accept-first intake (`receiveAccepted`): each run's first attempt is made before anything is stored; the
 * runs it accepted are committed with their event and their outcome recorded, those it refused leave no run
 * (nor an event, when none of its runs was accepted), and the answer says why.
 */

import { afterEach, describe, expect, it } from 'vitest';
import type { ActionType } from '../src/core/action.js';
import { DispatcherError } from '../src/core/errors.js';
import type { InboundMessage } from '../src/core/intake.js';
import { event, startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';

/** `gate`: waits for an answer, succeeds or refuses, as the event's `data.answer` says; counts its attempts. */
const attempts: string[] = [];
const gate: ActionType = {
  type: 'gate',
  create: () => ({
    async execute(ctx) {
      const { answer, correlation } = ctx.event.data as { answer: string; correlation?: string };
      attempts.push(ctx.runId);
      if (answer === 'wait') return { status: 'waiting', correlationId: correlation!, result: { sentTo: 'someone' } };
      if (answer === 'ok') return { status: 'success', response: 'done' };
      throw new DispatcherError('recipient_not_found', 'nobody is there');
    },
  }),
};

let t: TestDispatcher | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
  attempts.length = 0;
});

function message(events: unknown[]): InboundMessage {
  return { input: 'test.accept', raw: Buffer.from(JSON.stringify(events)), contentType: 'application/cloudevents-batch+json', headers: {}, service: 'svc', orgId: 'org-1' };
}

describe('accept-first intake', () => {
  it('commits the runs whose first attempt was accepted, and stores nothing of a refused one', async () => {
    t = await startDispatcher({ routes: [{ name: 'gated', match: { type: 'gate.*' }, actions: [{ gate: {} }], retry: { attempts: 3 } }] }, { actionTypes: [gate] });
    const events = [
      event({ type: 'gate.x', data: { answer: 'wait', correlation: 'c-1' } }),
      event({ type: 'gate.x', data: { answer: 'refuse' } }),
      event({ type: 'gate.x', data: { answer: 'ok' } }),
      event({ type: 'nothing.matches' }),
    ];
    const answer = await t.d.receiveAccepted(message(events), 'http');
    // The refused event is left out of the results; its run is in `refusedRuns` with its error.
    expect(answer.results.map((r) => [r.status, r.runIds.length])).toEqual([
      ['accepted', 1],
      ['accepted', 1],
      ['accepted', 0],
    ]);
    expect(answer.refusedRuns).toHaveLength(1);
    expect(answer.refusedRuns[0]).toMatchObject({ event: 1, route: 'gated', action: 'gate', error: { code: 'recipient_not_found', message: 'nobody is there' } });
    expect(attempts).toHaveLength(3);

    const waitingId = answer.results[0]!.runIds[0]!;
    const waiting = (await waitFor(() => t!.d.store.getRun(waitingId), (r) => r?.correlationId === 'c-1', 5000, 'the waiting outcome'))!;
    expect(waiting).toMatchObject({ status: 'running', correlationId: 'c-1', leaseOwner: null, attempts: 1, result: { sentTo: 'someone' } });
    expect(await t.d.store.getAttempts(waiting.id)).toMatchObject([{ n: 1, outcome: 'waiting' }]);
    const done = await waitForRun(t.d, answer.results[1]!.runIds[0]!, ['success']);
    expect(done.attempts).toBe(1);

    // Nothing of the refused run: no run, no event (none of its runs was accepted), and it was not retried.
    expect(await t.d.store.getRun(answer.refusedRuns[0]!.runId)).toBeNull();
    const stored = await t.d.store.listEvents({ limit: 10, offset: 0 });
    expect(stored.items.map((e) => e.event.id).sort()).toEqual([events[0]!.id, events[2]!.id, events[3]!.id].sort());
    await new Promise((r) => setTimeout(r, 300));
    expect(attempts).toHaveLength(3);
    // The waiting run's create event and then its waiting update, in the outbox.
    const history = (await t.d.store.readRunEvents(0, 100)).filter((e) => e.runId === waiting.id).map((e) => `${e.eventType}:${e.status}`);
    expect(history).toEqual(['create:running', 'update:running']);
  });

  it('refuses a bad message whole, as intake does, without attempting anything', async () => {
    t = await startDispatcher({ routes: [{ name: 'gated', match: { type: 'gate.*' }, actions: [{ gate: {} }] }] }, { actionTypes: [gate] });
    const bad: InboundMessage = { ...message([]), raw: Buffer.from('{not json') };
    await expect(t.d.receiveAccepted(bad, 'http')).rejects.toMatchObject({ code: 'invalid_json' });
    expect(attempts).toEqual([]);
    expect((await t.d.store.listDeadLetters({ limit: 10, offset: 0 })).total).toBe(1);
  });
});
