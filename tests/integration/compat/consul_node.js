// Drives node's `consul` package (unchanged) against switchyard's Consul-compatible API.
// Usage: node consul_node.js HOST PORT SERVICE ID BACKEND_PORT [TOKEN]
// Prints one JSON line per step; the Python test checks the registry between them.
const Consul = require('consul');
const [host, port, service, id, backendPort, token] = process.argv.slice(2);
const consul = new Consul({ host, port: Number(port), defaults: token ? { token } : {} });
const say = (step, data) => console.log(JSON.stringify({ step, data }));

(async () => {
  await consul.agent.service.register({
    name: service, id, address: '127.0.0.1', port: Number(backendPort), tags: ['node', 'v1'],
    meta: { client: 'node-consul' }, check: { ttl: '30s', status: 'passing' },
  });
  say('registered', null);
  await consul.agent.check.pass({ id: `service:${id}`, note: 'fine' });
  say('passed', null);
  const health = await consul.health.service({ service, passing: true });
  say('health', health.map((e) => ({ id: e.Service.ID, port: e.Service.Port, tags: e.Service.Tags })));
  const services = await consul.catalog.service.list();
  say('catalog', services);
  const agentServices = await consul.agent.service.list();
  say('agent', Object.keys(agentServices));
  await consul.agent.service.deregister(id);
  say('deregistered', null);
})().catch((e) => {
  say('error', String(e && e.message ? e.message : e));
  process.exit(1);
});
