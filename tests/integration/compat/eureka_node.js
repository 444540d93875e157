// Drives `eureka-js-client` (unchanged) against switchyard's Eureka-compatible API.
// Usage: node eureka_node.js HOST PORT APP INSTANCE_ID BACKEND_PORT
// Registers, heartbeats every second, fetches the registry every second; prints one JSON line per
// event. On "stop" from stdin it deregisters (client.stop()) and exits.
const { Eureka } = require('eureka-js-client');
const [host, port, app, instanceId, backendPort] = process.argv.slice(2);
const say = (step, data) => console.log(JSON.stringify({ step, data }));

const client = new Eureka({
  instance: {
    app, instanceId, hostName: 'localhost', ipAddr: '127.0.0.1', vipAddress: app.toLowerCase(),
    port: { $: Number(backendPort), '@enabled': true },
    statusPageUrl: `http://127.0.0.1:${backendPort}/info`,
    dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$MyDataCenterInfo', name: 'MyOwn' },
    metadata: { client: 'eureka-js-client' },
  },
  eureka: {
    host, port: Number(port), servicePath: '/eureka/v2/apps/',
    heartbeatInterval: 1000, registryFetchInterval: 1000, maxRetries: 3, requestRetryDelay: 200,
  },
  logger: { debug() {}, info() {}, warn: (...a) => say('warn', a.join(' ')), error: (...a) => say('error', a.join(' ')) },
});
client.on('started', () => say('started', null));
client.on('registered', () => say('registered', null));
client.on('heartbeat', () => say('heartbeat', null));
client.on('registryUpdated', () => {
  const found = client.getInstancesByAppId(app).map((i) => ({ id: i.instanceId, status: i.status, port: i.port && i.port.$ }));
  say('fetched', found);
});
client.on('deregistered', () => say('deregistered', null));
client.start((err) => { if (err) say('error', String(err)); });
process.stdin.on('data', (d) => {
  if (String(d).includes('stop')) client.stop(() => { say('stopped', null); process.exit(0); });
});
