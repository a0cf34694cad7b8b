/** The bus decoders: CloudEvents bindings, plain JSON with a type field, the SNS envelope. */

import { describe, expect, it } from 'vitest';
import type { InboundMessage } from '../src/core/intake.js';
import { busDecoder, MESSAGE_ID_HEADER, TOPIC_HEADER } from '../src/transports/decode.js';

const KAFKA = { prefixes: ['ce_'] };
const AMQP = { prefixes: ['cloudevents:', 'cloudevents_'] };
const MQTT5 = { prefixes: [''] };

function message(body: unknown, o: Partial<InboundMessage> = {}): InboundMessage {
  return {
    input: 'bus',
    raw: Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)),
    contentType: null,
    headers: {},
    service: 's',
    orgId: 'o',
    ...o,
  };
}

const attrs = { specversion: '1.0', id: 'a-1', source: 'urn:x', type: 't.x' };

describe('cloudevents', () => {
  it('reads binary mode from the binding prefix, structured mode and batches', () => {
    const kafka = busDecoder(undefined, KAFKA, 'kafka://bus');
    const binary = kafka(
      message({ n: 1 }, { contentType: 'application/json', headers: { ce_specversion: '1.0', ce_id: 'a-1', ce_source: 'urn:x', ce_type: 't.x', ce_subject: 'h%C3%A9' } }),
    );
    expect(binary).toEqual({ batch: false, events: [{ ...attrs, subject: 'hé', datacontenttype: 'application/json', data: { n: 1 } }] });
    expect(kafka(message(attrs)).events).toEqual([attrs]);
    expect(kafka(message([attrs, { ...attrs, id: 'a-2' }], { contentType: 'application/cloudevents-batch+json' }))).toMatchObject({ batch: true, events: [{ id: 'a-1' }, { id: 'a-2' }] });
    const amqp = busDecoder({ format: 'cloudevents' }, AMQP, 'amqp://bus');
    expect(amqp(message('plain text', { contentType: 'text/plain', headers: { 'cloudevents:specversion': '1.0', 'cloudevents:id': 'a', 'cloudevents:source': 's', 'cloudevents:type': 't' } })).events[0]).toMatchObject({
      id: 'a',
      data: 'plain text',
    });
    expect(amqp(message(Buffer.from([0xff, 0x00]), { contentType: 'application/octet-stream', headers: { 'cloudevents_specversion': '1.0', 'cloudevents_id': 'b' } })).events[0]).toMatchObject({
      id: 'b',
      data_base64: '/wA=',
    });
  });

  it('MQTT 5: attributes as user properties without a prefix, the content type from its property or datacontenttype', () => {
    const mqtt = busDecoder(undefined, MQTT5, 'mqtt://bus');
    const e = mqtt(message({ n: 2 }, { headers: { ...attrs, datacontenttype: 'application/json', ':topic': 'a.b' } })).events[0];
    expect(e).toEqual({ ...attrs, datacontenttype: 'application/json', data: { n: 2 } });
  });

  it('refuses JSON that is not an event, and bytes that are not JSON, with codes', () => {
    const d = busDecoder(undefined, KAFKA, 'kafka://bus');
    expect(() => d(message({ hello: 1 }))).toThrow(expect.objectContaining({ code: 'invalid_event' }));
    expect(() => d(message('{nope'))).toThrow(expect.objectContaining({ code: 'invalid_json' }));
    expect(() => d(message(Buffer.from([0xc3, 0x28])))).toThrow(expect.objectContaining({ code: 'invalid_utf8' }));
    expect(() => d(message('{"__proto__": {"x": 1}, "specversion": "1.0"}'))).toThrow(expect.objectContaining({ code: 'forbidden_key' }));
  });
});

describe('json', () => {
  it('takes the type from a field and the id from another, else the message id, else a hash of the bytes', () => {
    const d = busDecoder({ format: 'json', typeField: 'message_type', idField: 'meta.id' }, KAFKA, 'kafka://obs');
    const body = { message_type: 'update_requirement_assessment', meta: { id: 7 }, selector: { ref_id: 'A.1' } };
    expect(d(message(body, { headers: { [TOPIC_HEADER]: 'observation' } })).events[0]).toEqual({
      specversion: '1.0',
      id: '7',
      source: 'kafka://obs',
      type: 'update_requirement_assessment',
      datacontenttype: 'application/json',
      topic: 'observation',
      data: body,
    });
    const noId = { message_type: 'x' };
    expect(d(message(noId, { headers: { [MESSAGE_ID_HEADER]: 'obs/0/42' } })).events[0]).toMatchObject({ id: 'obs/0/42' });
    const hashed = d(message(noId)).events[0] as { id: string };
    expect(hashed.id).toMatch(/^[0-9a-f]{64}$/);
    expect((d(message(noId)).events[0] as { id: string }).id).toBe(hashed.id);
    expect((d(message({ message_type: 'y' })).events[0] as { id: string }).id).not.toBe(hashed.id);
  });

  it('names the missing type field with a pointer; a fixed type is the fallback', () => {
    const d = busDecoder({ format: 'json', typeField: 'kind.name' }, KAFKA, 'kafka://obs');
    expect(() => d(message({ kind: {} }))).toThrow(expect.objectContaining({ code: 'invalid_event', problems: [{ pointer: '/kind/name', message: 'required field is missing' }] }));
    expect(() => d(message([1]))).toThrow(expect.objectContaining({ code: 'invalid_event' }));
    const fixed = busDecoder({ format: 'json', type: 'fallback', typeField: 'kind' }, KAFKA, 'kafka://obs');
    expect(fixed(message({ n: 1 })).events[0]).toMatchObject({ type: 'fallback' });
    expect(fixed(message({ kind: 'named' })).events[0]).toMatchObject({ type: 'named' });
    expect(fixed(message({ kind: 3 })).events[0]).toMatchObject({ type: 'fallback' });
  });
});

describe('sns', () => {
  const envelope = (inner: unknown, extra: Record<string, unknown> = {}) => ({
    Type: 'Notification',
    MessageId: '5d2a2f0e-0000-4000-8000-000000000001',
    TopicArn: 'arn:aws:sns:us-east-1:123456789012:sesshu-requests',
    Message: typeof inner === 'string' ? inner : JSON.stringify(inner),
    Timestamp: '2026-11-23T10:00:00.000Z',
    MessageAttributes: { Kind: { Type: 'String', Value: 'robots' } },
    ...extra,
  });

  it('unwraps the notification: its MessageId is the id, its attributes are headers', () => {
    const d = busDecoder({ format: 'sns', message: { format: 'json', type: 'sesshu.request' } }, { prefixes: ['ce-'] }, 'sqs://requests');
    const e = d(message(envelope({ id: 'r-1', url: 'https://example.com' }))).events[0];
    expect(e).toMatchObject({ id: '5d2a2f0e-0000-4000-8000-000000000001', type: 'sesshu.request', source: 'sqs://requests', data: { id: 'r-1', url: 'https://example.com' } });
  });

  it('decodes a CloudEvent inside the notification', () => {
    const d = busDecoder({ format: 'sns', message: { format: 'cloudevents' } }, { prefixes: ['ce-'] }, 'sqs://requests');
    expect(d(message(envelope(attrs))).events).toEqual([attrs]);
  });

  it('a message that is no notification is invalid_envelope (the seed crashed on it)', () => {
    const d = busDecoder({ format: 'sns' }, { prefixes: ['ce-'] }, 'sqs://requests');
    expect(() => d(message({ id: 'raw', url: 'https://example.com' }))).toThrow(expect.objectContaining({ code: 'invalid_envelope' }));
    expect(() => d(message(envelope('not json')))).toThrow(expect.objectContaining({ code: 'invalid_json' }));
    expect(() => d(message(envelope([1, 2])))).toThrow(expect.objectContaining({ code: 'invalid_event' }));
  });
});
