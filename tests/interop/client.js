#!/usr/bin/env node
// A grpc-js client of logsvc, built only from proto/ (and the protocol copies
// beside this file), that drives one log's whole life the way a bridge in any
// language would, then holds an Exchange stream idle under a 10 s client
// keepalive: what a Node, Go or Java client does by default is what logsvc
// must accept.
//
//   node tests/interop/client.js TARGET      (HOST:PORT or unix:/PATH)
//
// Environment: DMULOG_INTEROP_IDLE_S, seconds the stream stays idle (default
// 45: past the ~40 s after which a server with gRPC's default ping policy cut
// such a client off); DMULOG_INTEROP_MODULES, where @grpc/grpc-js and
// @grpc/proto-loader are (default .cache/interop/node_modules).
//
// Prints one "ok STEP" line per step and "interop: ok" at the end; exit 0
// then, 1 with "FAIL ..." on the first step that goes wrong.
'use strict';

const path = require('path');

const REPO = path.resolve(__dirname, '..', '..');
const MODULES = process.env.DMULOG_INTEROP_MODULES || path.join(REPO, '.cache', 'interop', 'node_modules');
const grpc = require(path.join(MODULES, '@grpc', 'grpc-js'));
const protoLoader = require(path.join(MODULES, '@grpc', 'proto-loader'));

const IDLE_S = Number(process.env.DMULOG_INTEROP_IDLE_S || '45');
const KEEPALIVE_MS = 10000;
const SECTORS = 128;
const REGION_SIZE = 16;

const LOAD = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function load(file, includeDirs) {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, { ...LOAD, includeDirs }));
}

function step(name, detail) {
  console.log(`ok ${name}${detail === undefined ? '' : ' ' + JSON.stringify(detail)}`);
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

function unary(client, method, request, deadlineS = 10) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + deadlineS * 1000 }, (err, response) =>
      err ? reject(err) : resolve(response));
  });
}

async function refused(promise, code, what) {
  try {
    await promise;
  } catch (err) {
    check(err.code === code, `${what}: code ${err.code} (${err.details}), expected ${code}`);
    return err;
  }
  throw new Error(`${what}: answered, expected code ${code}`);
}

// An Exchange stream as a bridge uses it: calls go out with ids, each result
// comes back under its id, several per message when they are ready together.
class Exchange {
  constructor(client) {
    this.pending = new Map();
    this.failure = null;
    this.call = client.Exchange();
    this.call.on('data', (response) => {
      for (const result of response.results) {
        const waiter = this.pending.get(result.id);
        if (waiter) {
          this.pending.delete(result.id);
          waiter.resolve(result);
        }
      }
    });
    this.call.on('error', (err) => this.fail(err));
    this.call.on('end', () => this.fail(new Error('Exchange stream ended by the server')));
  }

  fail(err) {
    this.failure = this.failure || err;
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
  }

  send(calls) {
    if (this.failure) return Promise.reject(this.failure);
    const answers = calls.map((c) => new Promise((resolve, reject) =>
      this.pending.set(c.id, { resolve, reject })));
    this.call.write({ calls });
    return Promise.all(answers);
  }

  close() {
    this.call.removeAllListeners('end');
    this.call.on('end', () => {});
    this.call.end();
  }
}

async function main() {
  const target = process.argv[2];
  check(target, 'usage: client.js TARGET');
  const { dmulog } = load('dmulog/v1/dmulog.proto', [path.join(REPO, 'proto')]);
  const health = load('health.proto', [__dirname]).grpc.health.v1;
  const reflection = load('reflection.proto', [__dirname]).grpc.reflection.v1alpha;
  const options = {
    'grpc.keepalive_time_ms': KEEPALIVE_MS,
    'grpc.keepalive_timeout_ms': 5000,
    'grpc.keepalive_permit_without_calls': 1,
  };
  const creds = grpc.credentials.createInsecure();
  const log = new dmulog.v1.DirtyLog(target, creds, options);

  const uuid = `LVM-interop-js-${process.pid}-${Date.now()}`;
  const k = { log: { uuid, luid: '4096' }, node: { name: 'node-js', boot_id: 'boot-js', epoch: '0' } };

  const served = await unary(new health.Health(target, creds, options), 'Check', { service: 'dmulog.v1.DirtyLog' });
  check(served.status === 'SERVING', `health of dmulog.v1.DirtyLog: ${served.status}`);
  const whole = await unary(new health.Health(target, creds, options), 'Check', { service: '' });
  check(whole.status === 'SERVING', `health of the server: ${whole.status}`);
  step('health', served.status);
  await refused(unary(new health.Health(target, creds, options), 'Check', { service: 'no.such.Service' }),
    grpc.status.NOT_FOUND, 'health of an unknown service');
  step('health-unknown-service');

  const services = await new Promise((resolve, reject) => {
    const call = new reflection.ServerReflection(target, creds, options).ServerReflectionInfo();
    call.on('data', (response) => {
      call.end();
      if (response.list_services_response) resolve(response.list_services_response.service.map((s) => s.name));
      else reject(new Error(`reflection: ${JSON.stringify(response.error_response)}`));
    });
    call.on('error', reject);
    call.write({ host: '', list_services: '' });
  });
  for (const name of ['dmulog.v1.DirtyLog', 'grpc.health.v1.Health']) {
    check(services.includes(name), `reflection lists ${services}, not ${name}`);
  }
  step('reflection', services);

  const ctr = await unary(log, 'Ctr', { ...k, target_sectors: String(SECTORS), log_type: 'clustered-core',
    args: [String(REGION_SIZE)] });
  step('Ctr', ctr.device);
  await unary(log, 'Resume', k);
  step('Resume');
  const size = await unary(log, 'GetRegionSize', k);
  check(size.region_size === String(REGION_SIZE), `region size ${size.region_size}`);
  step('GetRegionSize', size.region_size);
  await unary(log, 'MarkRegion', { ...k, regions: ['0', '5'] });
  step('MarkRegion');
  await unary(log, 'Flush', { ...k, mark_regions: ['6'] });
  step('Flush');
  const marked = await unary(log, 'IsClean', { ...k, region: '0' });
  check(!marked.clean, 'region 0 clean after its mark');
  step('IsClean', marked.clean);
  const before = await unary(log, 'InSync', { ...k, region: '0' });
  check(!before.in_sync, 'a new core log in sync');
  step('InSync', before.in_sync);
  const work = await unary(log, 'GetResyncWork', k);
  check(work.has_work && work.region === '0', `resync work ${JSON.stringify(work)}`);
  step('GetResyncWork', work.region);
  await unary(log, 'SetRegionSync', { ...k, region: '0', in_sync: true });
  step('SetRegionSync');
  await unary(log, 'ClearRegion', { ...k, regions: ['0', '5', '6'] });
  step('ClearRegion');
  await refused(new Promise((resolve, reject) => log.makeUnaryRequest('/dmulog.v1.DirtyLog/NoSuchMethod',
    (x) => x, (x) => x, Buffer.alloc(0), (err, r) => (err ? reject(err) : resolve(r)))),
  grpc.status.UNIMPLEMENTED, 'an unknown method');
  step('unknown-method');

  const exchange = new Exchange(log);
  const results = await exchange.send([
    { id: '1', timeout_ms: 5000, in_sync: { ...k, region: '0' } },
    { id: '2', timeout_ms: 5000, is_clean: { ...k, region: '0' } },
    { id: '3', timeout_ms: 5000, get_sync_count: k },
    { id: '4', timeout_ms: 5000, mark_region: { ...k, regions: ['7'] } },
  ]);
  for (const r of results) check(r.code === 0, `Exchange call ${r.id}: code ${r.code} ${r.message}`);
  check(results[0].in_sync.in_sync === true, 'region 0 not in sync after SET_REGION_SYNC');
  check(results[1].is_clean.clean === true, 'region 0 (in sync) dirty after CLEAR_REGION');
  check(results[2].get_sync_count.sync_count === '1', `sync count ${results[2].get_sync_count.sync_count}`);
  step('Exchange', results.map((r) => r.response));

  // Idle: no call on the stream, the client pinging every 10 s. A server that
  // refuses such pings ends the connection with GOAWAY ENHANCE_YOUR_CALM and
  // this stream with it (UNAVAILABLE), which the next send reports.
  const started = Date.now();
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, IDLE_S * 1000);
    exchange.call.on('error', () => { clearTimeout(timer); resolve(); }); // fail at once, not IDLE_S later
  });
  check(!exchange.failure, `idle Exchange stream failed after ${(Date.now() - started) / 1000} s: ${exchange.failure}`);
  const after = await exchange.send([{ id: '5', timeout_ms: 5000, clear_region: { ...k, regions: ['7'] } }]);
  check(after[0].code === 0, `Exchange after idling: code ${after[0].code} ${after[0].message}`);
  step('idle-Exchange', { seconds: IDLE_S, keepalive_ms: KEEPALIVE_MS });
  exchange.close();

  // A client that goes away with a call on its stream: logsvc must take it as
  // an ordinary end (the test reads its log for tracebacks).
  const dropped = new Exchange(log);
  dropped.call.on('error', () => {});
  dropped.send([{ id: '1', get_sync_count: k }]).catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 100));
  dropped.call.cancel();
  step('Exchange-cancelled');

  await unary(log, 'Presuspend', k);
  step('Presuspend');
  await unary(log, 'Postsuspend', k);
  step('Postsuspend');
  await unary(log, 'Dtr', k);
  step('Dtr');
  await refused(unary(log, 'GetRegionSize', k), grpc.status.NOT_FOUND, 'GetRegionSize after Dtr');
  step('gone');
  log.close();
  console.log('interop: ok');
}

main().then(() => process.exit(0), (err) => {
  console.log(`FAIL ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
