/**
 * Intake of many messages at once (what a bus input hands over per turn of the event loop): each message is
 * checked alone, the good ones are committed together in order, and every answer belongs to its message.
 */

import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InboundMessage } from '../src/core/intake.js';
import { decodeCloudEvents } from '../src/transports/decode.js';
import { event, idTime, startDispatcher, type TestDispatcher } from './helpers.js';

const open: TestDispatcher[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const t of open.splice(0)) await t.close();
});

function message(body: unknown): InboundMessage {
  const raw = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return { input: 'bus', raw, contentType: 'application/cloudevents+json', headers: {}, service: 'test', orgId: 'default' };
}

const decode = (m: InboundMessage) => decodeCloudEvents(m, { prefixes: ['ce-'] });

async function counted(t: TestDispatcher, outcome: string): Promise<number> {
  const metric = await t.d.metrics.eventsReceived.get();
  return metric.values.find((v) => v.labels.input === 'bus' && v.labels.outcome === outcome)?.value ?? 0;
}

describe('Intake.receiveAll', () => {
  it('checks each message alone, commits the good ones together in order, and answers each message', async () => {
    const t = await startDispatcher({ routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] });
    open.push(t);
    const a = event({ id: 'a' });
    const b = event({ id: 'b' });
    // A clock that moves on at every reading: ids made with a reading of their own would miss the moment
    // intake took for the events.
    const realNow = Date.now.bind(Date);
    let ticks = 0;
    vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 1000 * ++ticks);
    const answers = t.d.intake.receiveAll(
      [message(a), message('not json {'), message(a), message({ ...b, source: '' }), message(b), message([event({ id: 'c1' }), event({ id: 'c2' })])],
      decode,
    );
    expect(answers).toHaveLength(6);
    const settled = await Promise.allSettled(answers);
    vi.restoreAllMocks();
    const value = (i: number) => (settled[i]!.status === 'fulfilled' ? (settled[i] as PromiseFulfilledResult<{ results: Array<{ status: string; key: string; runIds: string[] }> }>).value : null);
    const reason = (i: number) => (settled[i]!.status === 'rejected' ? (settled[i] as PromiseRejectedResult).reason : null);

    expect(value(0)!.results.map((r) => r.status)).toEqual(['accepted']);
    expect(reason(1)).toMatchObject({ code: 'invalid_json' });
    // The same event twice in one call is one event: the second answer names the first's key.
    expect(value(2)!.results).toEqual([{ key: value(0)!.results[0]!.key, status: 'duplicate', runIds: [] }]);
    expect(reason(3)).toMatchObject({ code: 'invalid_event' });
    expect(value(4)!.results.map((r) => r.status)).toEqual(['accepted']);
    expect(value(5)!.results.map((r) => r.status)).toEqual(['accepted', 'accepted']);
    for (const i of [0, 4, 5]) for (const r of value(i)!.results) expect(r.runIds).toHaveLength(1);

    // Stored in the order given; the bad ones are dead letters, one each.
    const events = await t.d.store.listEvents({ limit: 10, offset: 0 });
    expect(events.items.map((e) => e.event.id).sort()).toEqual(['a', 'b', 'c1', 'c2']);
    const keys = [value(0), value(4), value(5)].flatMap((v) => v!.results.map((r) => r.key));
    expect([...keys].sort()).toEqual(keys);
    // An event's key and its runs' ids carry the moment intake received it: the stores list and find runs
    // by creation time through their ids.
    for (const r of [value(0), value(4), value(5)].flatMap((v) => v!.results)) {
      const received = (await t.d.store.getEvent(r.key))!.receivedAt;
      expect(idTime(r.key)).toBe(received);
      for (const id of r.runIds) expect([idTime(id), (await t.d.store.getRun(id))!.createdAt]).toEqual([received, received]);
    }
    const dead = await t.d.store.listDeadLetters({ limit: 10, offset: 0 });
    expect(dead.items.map((x) => x.reason).sort()).toEqual(['invalid_event', 'invalid_json']);
    expect(await counted(t, 'accepted')).toBe(4);
    expect(await counted(t, 'duplicate')).toBe(1);
    expect(await counted(t, 'rejected')).toBe(2);
  });

  it('a batch keeps its good events: each bad one is refused alone, with its index, and kept as a dead letter that replays alone', async () => {
    const t = await startDispatcher({ routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] });
    open.push(t);
    const batch = [event({ id: 'g1' }), { ...event({ id: 'b1' }), specversion: '0.3' }, event({ id: 'g2' }), { ...event({ id: 'b2' }), data: JSON.parse('[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]') }];
    const [answer] = t.d.intake.receiveAll([message(batch)], decode);
    const { results, refused } = await answer!;
    expect(results.map((r) => r.status)).toEqual(['accepted', 'accepted']);
    expect(refused.map((r) => [r.index, r.error.code])).toEqual([
      [1, 'invalid_event'],
      [3, 'too_deep'],
    ]);
    expect(refused[0]!.error.problems!.map((p) => p.pointer)).toEqual(['/1/specversion']);
    expect(await counted(t, 'accepted')).toBe(2);
    expect(await counted(t, 'rejected')).toBe(2);
    // Each refused event is its own dead letter, committed before the answer: the event, pointers into it.
    const letter = (await t.d.store.getDeadLetter(refused[0]!.deadLetter))!;
    expect(JSON.parse(letter.raw.toString())).toEqual(batch[1]);
    expect(letter).toMatchObject({ origin: 'intake', source: 'bus', reason: 'invalid_event', contentType: 'application/cloudevents+json', details: { index: 1, problems: [{ pointer: '/specversion' }] } });
    // Replayed, it goes through intake alone (whatever decoder the batch came through): refused again, one more attempt.
    await expect(t.d.replayDeadLetter(letter.id)).rejects.toMatchObject({ code: 'invalid_event', problems: [expect.objectContaining({ pointer: '/specversion' })] });
    expect((await t.d.store.getDeadLetter(letter.id))!.attempts).toBe(2);
  });

  it('a batch whose refused events cannot be kept is store_unavailable, not acknowledged; sent again, its good events are duplicates', async () => {
    const t = await startDispatcher({ routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] });
    open.push(t);
    const batch = [event({ id: 'k1' }), { ...event({ id: 'k2' }), id: '' }];
    const spy = vi.spyOn(t.d.store, 'addDeadLetters').mockRejectedValueOnce(new Error('disk full'));
    const [first] = t.d.intake.receiveAll([message(batch)], decode);
    await expect(first!).rejects.toMatchObject({ code: 'store_unavailable', deadLetterLost: true });
    spy.mockRestore();
    const [again] = t.d.intake.receiveAll([message(batch)], decode);
    const answer = await again!;
    expect(answer.results.map((r) => r.status)).toEqual(['duplicate']);
    expect(answer.refused).toHaveLength(1);
    expect((await t.d.store.listDeadLetters({ limit: 10, offset: 0 })).items).toHaveLength(1);
  });

  it('keeps keys and run ids in the order events came when the clock is set back', async () => {
    const t = await startDispatcher({ routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] });
    open.push(t);
    const realNow = Date.now.bind(Date);
    let shift = 60_000;
    vi.spyOn(Date, 'now').mockImplementation(() => realNow() + shift);
    const [first] = await Promise.all(t.d.intake.receiveAll([message(event({ id: 'before' }))], decode));
    shift = 0; // the clock is set back a minute
    const [second] = await Promise.all(t.d.intake.receiveAll([message(event({ id: 'after' }))], decode));
    vi.restoreAllMocks();
    const a = first!.results[0]!;
    const b = second!.results[0]!;
    expect(b.key > a.key).toBe(true);
    expect(b.runIds[0]! > a.runIds[0]!).toBe(true);
    // Times stay at the last reading until the clock catches up: never earlier than an event before.
    const [ea, eb] = [await t.d.store.getEvent(a.key), await t.d.store.getEvent(b.key)];
    expect(eb!.receivedAt).toBeGreaterThanOrEqual(ea!.receivedAt);
  });

  it('answers every message shutting_down once intake is closed, and keeps nothing', async () => {
    const t = await startDispatcher({ routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] });
    open.push(t);
    t.d.intake.close();
    const settled = await Promise.allSettled(t.d.intake.receiveAll([message(event()), message('bad')], decode));
    for (const s of settled) expect(s).toMatchObject({ status: 'rejected', reason: { code: 'shutting_down' } });
    expect((await t.d.store.listEvents({ limit: 10, offset: 0 })).total).toBe(0);
    expect((await t.d.store.listDeadLetters({ limit: 10, offset: 0 })).total).toBe(0);
  });
});
