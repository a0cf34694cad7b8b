/**
 * The address policy of the `http` action: which network addresses a webhook may reach.
 *
 * A route's URL is often rendered from the event, so whoever produces events may choose the target. To
 * keep them from reaching the dispatcher's own network (a cloud metadata service at 169.254.169.254, a
 * database on 10.0.0.5, an admin port on localhost), every address is refused unless it is ordinary
 * public unicast, or the operator allowlisted it (`actions.http.allow`: CIDRs or exact host names).
 *
 * The check runs where the address is actually used: the socket connector looks the name up through
 * `lookup` below, which drops refused addresses from the answer before `net.connect` sees it. Checking the
 * name before sending and connecting later would leave a gap: a hostile DNS server can answer the check
 * with a public address and the connection with 127.0.0.1 (DNS rebinding). IP-literal hosts never go
 * through `lookup` (Node connects to them directly), so the connector checks those itself.
 */

import dns from 'node:dns';
import net, { type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import { buildConnector } from 'undici';
import { DispatcherError } from '../../core/errors.js';

type IPv4 = ipaddr.IPv4;
type IPv6 = ipaddr.IPv6;
type Address = IPv4 | IPv6;

/** `dns.lookup` with `all: true`, as the guard needs it (replaceable in tests to fake a DNS answer). */
export type ResolveAll = (hostname: string, options: dns.LookupOptions) => Promise<dns.LookupAddress[]>;

export interface AddressGuard {
  /** Why `address` (an IP literal) may not be used for `hostname`, or null when it may. */
  refusal(address: string, hostname?: string): string | null;
  /** True when the host name itself is allowlisted (any address it resolves to is allowed). */
  isAllowedHost(hostname: string): boolean;
  /**
   * The `address_blocked` error for a URL's host that is an IP literal (`10.0.0.1`, `[::1]`) the policy
   * refuses; null for an allowed address or a host name (names are judged when they resolve).
   */
  blockedLiteral(hostname: string): DispatcherError | null;
  /** A `net` lookup that resolves the name and keeps only the addresses the policy allows. */
  readonly lookup: LookupFunction;
  /** An undici connector that uses `lookup` and refuses blocked IP-literal hosts. */
  readonly connector: buildConnector.connector;
}

/** The range of an address as ipaddr.js names it, with embedded IPv4 addresses judged as IPv4. */
export function addressRange(address: string): string {
  const addr = ipaddr.parse(address);
  if (addr.kind() === 'ipv4') return addr.range();
  const v6 = addr as IPv6;
  const embedded = embeddedIPv4(v6);
  if (embedded !== null) return embedded.range();
  const range = v6.range();
  if (range !== 'unicast') return range;
  // Everything IANA has allocated for global unicast lies in 2000::/3; ipaddr.js calls the rest of the
  // space (for instance the deprecated IPv4-compatible ::a.b.c.d) unicast, but nothing public lives there.
  if ((v6.parts[0]! & 0xe000) !== 0x2000) return 'reserved';
  return 'unicast';
}

/**
 * The IPv4 address inside an IPv6 address that a host or a translator would turn into IPv4 traffic:
 * IPv4-mapped (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), NAT64 well-known prefix
 * (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::/48). Judging these as IPv6 would let
 * `[::ffff:127.0.0.1]` through as "unicast".
 */
function embeddedIPv4(v6: IPv6): IPv4 | null {
  const p = v6.parts;
  const fromWords = (hi: number, lo: number): IPv4 => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address();
  const range = v6.range();
  if (range === 'rfc6145') return fromWords(p[6]!, p[7]!);
  if (range === 'rfc6052' && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0) return fromWords(p[6]!, p[7]!);
  if (range === '6to4') return fromWords(p[1]!, p[2]!);
  return null;
}

/** IPv4-mapped IPv6 addresses as IPv4, so that `127.0.0.1/32` in the allowlist also covers them. */
function normalize(addr: Address): Address {
  if (addr.kind() === 'ipv6' && (addr as IPv6).isIPv4MappedAddress()) return (addr as IPv6).toIPv4Address();
  return addr;
}

function normalizeHost(hostname: string): string {
  let h = hostname.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** The error for a refused target. Names host and address, never anything from the request. */
export function addressBlocked(hostname: string, address: string, range: string): DispatcherError {
  const shown = hostname === address ? address : `${hostname} (${address})`;
  return new DispatcherError(
    'address_blocked',
    `${shown} is a ${range} address; add it to actions.http.allow to let webhooks reach it`,
  );
}

const defaultResolveAll: ResolveAll = (hostname, options) => dns.promises.lookup(hostname, { ...options, all: true });

/**
 * Build the policy from `actions.http.allow`. Entries are CIDRs (`10.0.0.0/8`, `fd00::/8`), single
 * addresses (`127.0.0.1`) or exact host names (`hooks.internal`). Throws `config_invalid` naming the entry.
 */
export function createAddressGuard(allow: readonly string[], options: { resolveAll?: ResolveAll } = {}): AddressGuard {
  const cidrs: Array<[Address, number]> = [];
  const hosts = new Set<string>();
  allow.forEach((entry, i) => {
    const parsed = parseAllowEntry(entry);
    if (typeof parsed === 'string') {
      const message = `"${entry}" is ${parsed}`;
      throw new DispatcherError('config_invalid', `actions.http.allow/${i}: ${message}`, {
        problems: [{ pointer: `/actions/http/allow/${i}`, message }],
      });
    }
    if ('host' in parsed) hosts.add(parsed.host);
    else cidrs.push(parsed.cidr);
  });

  const resolveAll = options.resolveAll ?? defaultResolveAll;

  function isAllowedHost(hostname: string): boolean {
    return hosts.has(normalizeHost(hostname));
  }

  function refusal(address: string, hostname: string = address): string | null {
    if (isAllowedHost(hostname)) return null;
    let addr: Address;
    try {
      addr = normalize(ipaddr.parse(normalizeHost(address)));
    } catch {
      return 'unparseable';
    }
    for (const [block, bits] of cidrs) {
      if (block.kind() === addr.kind() && addr.match(block, bits)) return null;
    }
    const range = addressRange(addr.toString());
    return range === 'unicast' ? null : range;
  }

  // `net.connect` calls this with `all: true` when it races IPv4 and IPv6 (autoSelectFamily, the default
  // on Node 20), and without it otherwise; the callback's shape follows the option.
  const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
    const cb = callback as (err: NodeJS.ErrnoException | null, address?: string | dns.LookupAddress[], family?: number) => void;
    const { all: _all, ...resolveOptions } = lookupOptions;
    resolveAll(hostname, resolveOptions).then(
      (addresses) => {
        const usable = addresses.filter((a) => refusal(a.address, hostname) === null);
        if (usable.length === 0) {
          const first = addresses[0];
          if (first === undefined) {
            const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
            err.code = 'ENOTFOUND';
            cb(err);
            return;
          }
          cb(addressBlocked(hostname, first.address, refusal(first.address, hostname) ?? 'refused') as NodeJS.ErrnoException);
          return;
        }
        if (lookupOptions.all === true) cb(null, usable);
        else cb(null, usable[0]!.address, usable[0]!.family);
      },
      (err: NodeJS.ErrnoException) => cb(err),
    );
  };

  function blockedLiteral(hostname: string): DispatcherError | null {
    const host = normalizeHost(hostname);
    if (net.isIP(host) === 0) return null;
    const why = refusal(host);
    return why === null ? null : addressBlocked(host, host, why);
  }

  const base = buildConnector({ lookup, keepAlive: true });
  const connector: buildConnector.connector = (connectOptions, callback) => {
    const blocked = blockedLiteral(connectOptions.hostname);
    if (blocked !== null) callback(blocked, null);
    else base(connectOptions, callback);
  };

  return { refusal, isAllowedHost, blockedLiteral, lookup, connector };
}

/** One allowlist entry, or why it is not one. `::ffff:10.0.0.0/104` means `10.0.0.0/8`. */
function parseAllowEntry(entry: string): { cidr: [Address, number] } | { host: string } | string {
  const text = entry.trim();
  if (text.includes('/')) {
    let cidr: [Address, number];
    try {
      cidr = ipaddr.parseCIDR(text);
    } catch (err) {
      return `not a valid CIDR (${(err as Error).message})`;
    }
    const [addr, bits] = cidr;
    if (addr.kind() === 'ipv6' && (addr as IPv6).isIPv4MappedAddress() && bits >= 96) {
      return { cidr: [(addr as IPv6).toIPv4Address(), bits - 96] };
    }
    return { cidr };
  }
  const bare = normalizeHost(text);
  if (net.isIP(bare) !== 0) {
    const addr = normalize(ipaddr.parse(bare));
    return { cidr: [addr, addr.kind() === 'ipv4' ? 32 : 128] };
  }
  if (!HOST_NAME.test(bare)) return 'not a CIDR, an IP address or a host name';
  return { host: bare };
}
