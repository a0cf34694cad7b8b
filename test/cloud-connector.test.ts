import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpClient } from '../src/actions/http/client.js';
import { cloudConnector } from '../src/actions/playbook/cloud-connector.js';
import type { Connector } from '../src/core/connector.js';
import { startFakeCloudConnector, type FakeCloudConnector } from './fake-cloud-connector.js';

const HERE = '9f0b54a4-4a60-4d0a-9a5e-0b7c2c0f1a11';
const AWAY = '2c1b1f5e-7f2d-4f43-8a5b-1e2d3c4b5a69';

describe('the Cloud Connector connector, against a fake that speaks its API', () => {
  let fake: FakeCloudConnector;
  let connector: Connector;
  const http = createHttpClient({ allow: ['127.0.0.1'], timeout: 5000, userAgent: 'dispatcher-test' });

  beforeAll(async () => {
    fake = await startFakeCloudConnector([HERE]);
    connector = cloudConnector({ url: `${fake.url}/`, clientId: 'playbook-dispatcher', psk: 'secret-psk', timeoutMs: 5000 }, http);
  });
  afterAll(async () => {
    await fake.close();
    await http.close();
  });

  it('sends a message with the original headers and body, and returns the id the connector gave', async () => {
    const message = { directive: 'rhc-worker-playbook', metadata: { return_url: 'https://example.com/api/ingress/v1/upload?a=1&b=<2>' }, payload: 'https://example.com/p.yml' };
    const sent = await connector.send(HERE, message, { orgId: '5318290', requestId: 'req-1' });
    expect(fake.messages).toHaveLength(1);
    const got = fake.messages[0]!;
    expect(sent.id).toBe(got.id);
    expect(got.recipient).toBe(HERE);
    expect(got.body).toEqual(message);
    expect(got.headers).toMatchObject({
      'x-rh-insights-request-id': 'req-1',
      'x-rh-cloud-connector-client-id': 'playbook-dispatcher',
      'x-rh-cloud-connector-psk': 'secret-psk',
      'x-rh-cloud-connector-org-id': '5318290',
      'content-type': 'application/json',
    });
  });

  it('says recipient_not_found for a recipient that is not connected, and codes other answers by status', async () => {
    await expect(connector.send(AWAY, { directive: 'd', metadata: {}, payload: '' }, { orgId: '1' })).rejects.toMatchObject({ code: 'recipient_not_found', httpStatus: 404 });
    fake.failWith = 500;
    await expect(connector.send(HERE, { directive: 'd', metadata: {}, payload: '' }, { orgId: '1' })).rejects.toMatchObject({ code: 'http_status', httpStatus: 500, retryable: true });
    fake.failWith = 400;
    await expect(connector.status(HERE, { orgId: '1' })).rejects.toMatchObject({ code: 'http_status', httpStatus: 400, retryable: false });
    fake.failWith = null;
  });

  it('reads connection states', async () => {
    expect(await connector.status(HERE, { orgId: '7' })).toEqual({ connected: true });
    expect(await connector.status(AWAY, { orgId: '7' })).toEqual({ connected: false });
    expect(fake.statusCalls.at(-1)!.headers).toMatchObject({ 'x-rh-cloud-connector-org-id': '7', 'x-rh-cloud-connector-psk': 'secret-psk' });
    expect(fake.statusCalls.at(-1)!.headers['x-rh-insights-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});
