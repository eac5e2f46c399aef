// A PLC directory and Bluesky's reference PDS on loopback, for tests.
//
// Prints one JSON line {"pds": url, "plc": url, "pdsPublicUrl": url} on stdout once both answer,
// then runs until stdin closes or SIGTERM/SIGINT arrives. dev-env writes its data under
// os.tmpdir(); when RELAY_PDS_SCRATCH_DIR names a directory, that directory becomes the temp dir
// and is removed at exit, so data does not outlive a test run even when its runner was killed.
//
// dev-env's servers call `app.listen(port)` with no host, which binds every interface. Node offers
// no global default host, so every listen() that names no host is pinned to 127.0.0.1 here,
// before dev-env is loaded.

import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';

const LOOPBACK = '127.0.0.1';

const scratchDir = process.env.RELAY_PDS_SCRATCH_DIR;
if (scratchDir) process.env.TMPDIR = scratchDir;

dns.setDefaultResultOrder('ipv4first');

const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  return originalListen.apply(this, pinToLoopback(args));
};

function pinToLoopback(args) {
  const [first, second] = args;
  if (first === undefined || typeof first === 'function') {
    return [0, LOOPBACK, ...args.filter((arg) => arg !== undefined)];
  }
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    return typeof second === 'string' ? args : [first, LOOPBACK, ...args.slice(1)];
  }
  if (typeof first === 'object' && first !== null && first.path === undefined && first.host === undefined) {
    return [{ ...first, host: LOOPBACK }, ...args.slice(1)];
  }
  return args;
}

// RELAY_PDS_HOSTS="name=127.0.0.1,...": names that resolve to a loopback address here, so a test can serve
// an https client metadata document under a real-looking name (authorization servers refuse IP literals,
// localhost and reserved TLDs such as .test in client IDs). Only loopback addresses are accepted.
const hosts = new Map(
  (process.env.RELAY_PDS_HOSTS ?? '')
    .split(',')
    .filter(Boolean)
    .map((pair) => pair.split('=')),
);
for (const address of hosts.values()) {
  if (!address.startsWith('127.')) throw new Error(`RELAY_PDS_HOSTS: ${address} is not a loopback address`);
}
if (hosts.size) {
  const lookup = dns.lookup;
  dns.lookup = function lookupTestHosts(hostname, options, callback) {
    const address = hosts.get(hostname);
    if (address === undefined) return lookup.call(this, hostname, options, callback);
    const done = typeof options === 'function' ? options : callback;
    const all = typeof options === 'object' && options !== null && options.all;
    if (all) process.nextTick(done, null, [{ address, family: 4 }]);
    else process.nextTick(done, null, address, 4);
  };
}

const { TestNetworkNoAppView } = (await import('@atproto/dev-env')).default;

const network = await TestNetworkNoAppView.create({});
const loopbackUrl = (port) => `http://${LOOPBACK}:${port}`;
process.stdout.write(
  JSON.stringify({
    pds: loopbackUrl(network.pds.port),
    plc: loopbackUrl(network.plc.port),
    pdsPublicUrl: network.pds.url,
  }) + '\n',
);

let closing = false;
async function shutdown(code) {
  if (closing) return;
  closing = true;
  // A wedged close must not keep the process (and its ports) alive.
  setTimeout(() => process.exit(code), 5000).unref();
  try {
    await network.close();
  } finally {
    if (scratchDir) fs.rmSync(scratchDir, { recursive: true, force: true });
    process.exit(code);
  }
}

process.stdin.on('end', () => shutdown(0));
process.stdin.on('close', () => shutdown(0));
process.stdin.resume();
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
