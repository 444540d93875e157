// Drives node's @grpc/grpc-js (unchanged) through switchyard to the test.Echo servers of
// test_grpc.py, on raw bytes (identity serializers, no generated code).
// Usage: node grpc_node.js PROXY_HOST:PORT AUTHORITY
// Prints one JSON line per step ({step, data}); the Python test asserts on them. A step that
// throws prints {step: 'error'} and exits 1.
const grpc = require('@grpc/grpc-js');

const [target, authority] = process.argv.slice(2);
const BIG = 16 * 1024 * 1024;
const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
  'grpc.default_authority': authority,
  'grpc.max_send_message_length': BIG,
  'grpc.max_receive_message_length': BIG,
});
const id = (b) => b;
const T0 = Date.now();
const say = (step, data) => console.log(JSON.stringify({ step, data, ms: Date.now() - T0 }));  // ms: when, for a slow run
const deadline = (s) => new Date(Date.now() + s * 1000);
const statusName = (code) => Object.keys(grpc.status).find((k) => grpc.status[k] === code);

function unary(method, payload, seconds) {
  return new Promise((resolve) => {
    client.makeUnaryRequest(`/test.Echo/${method}`, id, id, payload, new grpc.Metadata(),
      { deadline: deadline(seconds) }, (err, resp) => resolve({ err, resp }));
  });
}

function unaryWithTrailers(method, payload, md) {
  return new Promise((resolve) => {
    const out = {};
    const call = client.makeUnaryRequest(`/test.Echo/${method}`, id, id, payload, md, { deadline: deadline(60) },
      (err, resp) => { out.err = err; out.resp = resp; });
    call.on('metadata', (m) => { out.head = m.getMap(); });
    call.on('status', (st) => { out.code = st.code; out.details = st.details; out.trailers = st.metadata.getMap(); resolve(out); });
  });
}

function serverStream(n) {
  return new Promise((resolve, reject) => {
    const got = [];
    const call = client.makeServerStreamRequest('/test.Echo/ServerStream', id, id, Buffer.from(String(n)),
      new grpc.Metadata(), { deadline: deadline(120) });
    call.on('data', (m) => got.push(m.toString()));
    call.on('error', reject);
    call.on('status', (st) => { if (st.code === grpc.status.OK) resolve(got); });
  });
}

function clientStream(msgs) {
  return new Promise((resolve, reject) => {
    const call = client.makeClientStreamRequest('/test.Echo/ClientStream', id, id, new grpc.Metadata(),
      { deadline: deadline(120) }, (err, resp) => (err ? reject(err) : resolve(resp.toString())));
    for (const m of msgs) call.write(m);
    call.end();
  });
}

function bidi(msgs) {
  return new Promise((resolve, reject) => {
    const got = [];
    const call = client.makeBidiStreamRequest('/test.Echo/Bidi', id, id, new grpc.Metadata(), { deadline: deadline(120) });
    call.on('data', (m) => got.push(m.toString()));
    call.on('error', reject);
    call.on('status', (st) => { if (st.code === grpc.status.OK) resolve(got); });
    // Write with back-pressure: each message waits for the stream to take the previous one.
    let i = 0;
    const pump = () => {
      while (i < msgs.length) {
        if (!call.write(msgs[i++])) { call.once('drain', pump); return; }
      }
      call.end();
    };
    pump();
  });
}

(async () => {
  // Unary with metadata both ways: the instance's initial metadata and trailers come back.
  const md = new grpc.Metadata();
  md.set('x-probe', 'node');
  const u = await unaryWithTrailers('Unary', Buffer.from('hello from node'), md);
  say('unary', { code: statusName(u.code), resp: u.resp ? u.resp.toString() : null, head: u.head, trailers: u.trailers });

  // An application status passes unchanged, message included.
  const f = await unaryWithTrailers('Fail', Buffer.from('x'), new grpc.Metadata());
  say('fail', { code: statusName(f.code), details: f.details });

  // Every streaming shape, 1,000 messages each way.
  const ss = await serverStream(1000);
  say('server_stream', { count: ss.length, ordered: ss.every((m, i) => m === String(i)) });
  const msgs = Array.from({ length: 1000 }, (_, i) => Buffer.from(`m${i}`));
  say('client_stream', { resp: await clientStream(msgs), bytes: msgs.reduce((a, m) => a + m.length, 0) });
  const back = await bidi(msgs);
  say('bidi', { count: back.length, reversed: back.every((m, i) => m === msgs[i].toString().split('').reverse().join('')) });

  // A 10 MB message each way.
  const big = Buffer.alloc(10 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
  const b = await unary('Unary', big, 120);
  say('big', { code: b.err ? statusName(b.err.code) : 'OK', equal: !!b.resp && Buffer.compare(b.resp, big) === 0 });

  // A 1 s deadline against the 3 s handler: DEADLINE_EXCEEDED, and soon.
  const t0 = Date.now();
  const d = await unary('Slow', Buffer.from('z'), 1);
  say('deadline', { code: d.err ? statusName(d.err.code) : 'OK', ms: Date.now() - t0 });

  // 200 concurrent calls over this one channel.
  const calls = await Promise.all(Array.from({ length: 200 }, (_, i) => unaryWithTrailers('Unary', Buffer.from(`c${i}`), new grpc.Metadata())));
  const servedBy = {};
  let ok = 0;
  calls.forEach((c, i) => {
    if (c.code === grpc.status.OK && c.resp && c.resp.toString() === `c${i}`) ok++;
    const who = c.head && c.head['x-served-by'];
    servedBy[who] = (servedBy[who] || 0) + 1;
  });
  say('concurrent', { ok, servedBy });

  // No route for this authority: the proxy's own UNIMPLEMENTED.
  const other = new grpc.Client(target, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'no-such-service' });
  const nr = await new Promise((resolve) => {
    other.makeUnaryRequest('/test.Echo/Unary', id, id, Buffer.from('x'), new grpc.Metadata(), { deadline: deadline(60) },
      (err) => resolve(err));
  });
  say('no_route', { code: nr ? statusName(nr.code) : 'OK' });
  other.close();
  client.close();
})().catch((e) => {
  say('error', String(e && e.stack ? e.stack : e));
  process.exit(1);
});
