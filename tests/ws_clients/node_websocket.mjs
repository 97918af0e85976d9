// Node's built-in WebSocket (the WHATWG API, as in a browser; on Node 20 behind
// --experimental-websocket, built in from Node 22) against tether: the scenario of
// scenario.py, played the same way, printing the same lines.
//
// Usage: node [--experimental-websocket] node_websocket.mjs TETHER_URL
//
// tether runs with `--sse-heartbeat 1s`. This API shows a script neither pings nor pongs: the
// runtime answers tether's pings by itself, so the idle step shows it only by the sockets
// staying open. A script prints what it saw and exits 0, or prints `FAIL: why` and exits 1.

const WAIT_MS = 15_000;
const IDLE_MS = 3_500;

const BACKLOG = 'backlog';
const LIVE = 'live';
const OLD = ['old 1', 'old 2', 'old 3'];
const BY_HTTP = 'by HTTP';
const BY_B = 'by socket B';
const BY_A = 'by socket A: say "hi" \\ ü ☃';
const AFTER_IDLE = 'after the heartbeats';
const NOT_JSON = 'this is not JSON';
const LIVE_NEWS = [[1, BY_HTTP], [2, BY_B], [3, BY_A], [4, AFTER_IDLE]];
const EXPECTED = [
  ['A', BACKLOG, [[2, OLD[1]], [3, OLD[2]]]],
  ['A', LIVE, LIVE_NEWS],
  ['B', LIVE, LIVE_NEWS],
];

function fail(why) {
  console.log(`FAIL: ${why}`);
  process.exit(1);
}

const sleep = (ms) => new Promise((resume) => setTimeout(resume, ms));
const entries = (news) => news.map(([seq, data]) => `${seq}:${JSON.stringify(data)}`).join(' ');

async function publishHttp(tether, topic, data) {
  const answer = await fetch(`${tether}/publish/${topic}`, {
    method: 'POST', body: data, signal: AbortSignal.timeout(WAIT_MS),
  });
  if (!answer.ok) fail(`publishing to ${topic} by HTTP: ${answer.status} ${await answer.text()}`);
  return (await answer.json()).seq;
}

// One socket and what it received: news per topic as [seq, data], and errors. A frame of any
// other shape fails the script.
class Peer {
  constructor(name) {
    this.name = name;
    this.topics = new Map();
    this.errors = [];
    this.closed = null;  // the CloseEvent, once closed
  }

  static async open(url, name) {
    const peer = new Peer(name);
    const socket = new WebSocket(url);
    peer.socket = socket;
    socket.onmessage = (event) => peer.add(event.data);
    socket.onclose = (event) => { peer.closed = event; };
    await waitFor(`socket ${name} opens`, () => socket.readyState === WebSocket.OPEN || peer.closed);
    if (peer.closed) fail(`socket ${name} did not open: close ${peer.closed.code}`);
    return peer;
  }

  add(text) {
    if (typeof text !== 'string') fail(`socket ${this.name} got a binary message`);
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      fail(`socket ${this.name} got a text that is not JSON: ${text}`);
    }
    const keys = frame && typeof frame === 'object' ? Object.keys(frame).sort().join(',') : '';
    if (keys === 'data,seq,topic') {
      if (!this.topics.has(frame.topic)) this.topics.set(frame.topic, []);
      this.topics.get(frame.topic).push([frame.seq, frame.data]);
    } else if (keys === 'error' && frame.error) {
      this.errors.push(frame.error);
    } else {
      fail(`socket ${this.name} got an unexpected frame: ${text}`);
    }
  }

  count(topic) {
    return (this.topics.get(topic) || []).length;
  }

  send(message) {
    this.socket.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  describe() {
    return `socket ${this.name}: ${JSON.stringify([...this.topics])}, errors ${JSON.stringify(this.errors)}`;
  }

  // Waits until `condition()` holds, the socket open meanwhile.
  async until(what, condition) {
    await waitFor(what, () => condition() || this.closed !== null, () => this.describe());
    if (!condition()) fail(`${what}: the socket closed (${this.closed.code}); ${this.describe()}`);
  }
}

// Waits until `condition()` holds, for at most WAIT_MS: messages and events arrive meanwhile.
async function waitFor(what, condition, describe = () => '') {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    if (Date.now() >= deadline) fail(`${what}: not within ${WAIT_MS} ms; ${describe()}`);
    await sleep(20);
  }
}

async function main() {
  const tether = process.argv[2];
  if (!tether || !tether.startsWith('http://')) fail(`expected an http:// address, got ${tether}`);
  for (const data of OLD) await publishHttp(tether, BACKLOG, data);
  const url = `ws://${tether.slice('http://'.length)}/ws`;
  const a = await Peer.open(url, 'A');
  const b = await Peer.open(url, 'B');
  const peers = { A: a, B: b };

  a.send({ subscribe: BACKLOG, cursor: 1 });
  a.send({ subscribe: LIVE });
  a.send(NOT_JSON);
  b.send({ subscribe: LIVE });
  b.send(NOT_JSON);
  await a.until("A's backlog and its error", () => a.count(BACKLOG) === 2 && a.errors.length > 0);
  await b.until("B's error", () => b.errors.length > 0);

  const bothHave = async (count, what) => {
    for (const peer of [a, b]) await peer.until(`${what} reaches ${peer.name}`, () => peer.count(LIVE) >= count);
  };
  await publishHttp(tether, LIVE, BY_HTTP);
  await bothHave(1, 'the publish by HTTP');
  b.send({ publish: LIVE, data: BY_B });
  await bothHave(2, "B's publish");
  a.send({ publish: LIVE, data: BY_A });
  await bothHave(3, "A's publish");

  await sleep(IDLE_MS);
  await publishHttp(tether, LIVE, AFTER_IDLE);
  await bothHave(4, 'the publish after the idle heartbeats');
  console.log(`idle for ${IDLE_MS / 1000} s: both sockets answered the pings and stayed open`);

  for (const [name, topic, expected] of EXPECTED) {
    const got = peers[name].topics.get(topic) || [];
    if (entries(got) !== entries(expected)) {
      fail(`socket ${name} received on ${topic} ${entries(got)}, expected ${entries(expected)}`);
    }
    console.log(`${topic} on ${name}: ${entries(got)}`);
  }
  if (a.topics.size !== 2 || b.topics.size !== 1) fail(`news of topics not subscribed to: ${a.describe()} ${b.describe()}`);
  for (const peer of [a, b]) {
    if (peer.errors.length !== 1) fail(`socket ${peer.name} got the errors ${peer.errors}, expected one`);
  }
  console.log('not JSON: an error, and the socket stays open');

  const codes = [];
  for (const peer of [a, b]) {
    peer.socket.close(1000);
    await waitFor(`socket ${peer.name}'s close`, () => peer.closed !== null);
    if (!peer.closed.wasClean) fail(`socket ${peer.name} did not close cleanly: ${peer.closed.code}`);
    codes.push(peer.closed.code);
  }
  if (codes.join() !== '1000,1000') fail(`closing with 1000, tether answered ${codes}`);
  console.log('closed with 1000: tether answered 1000');
  console.log('node WebSocket: ok');
}

main().catch((error) => fail(`${error.stack || error}`));
