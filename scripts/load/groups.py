"""Quick measurement of GET /v1/users/{id}/groups for a user with 1,000 read states
(100 channels in 10 groups, 900 threads inheriting their parent's group, some muted),
beside the same user's summary, group summary and read states as peers of the same run.
Start a readstate (auth off) on an empty data directory, then:
  python3 scripts/load/groups.py 127.0.0.1:8080"""
import http.client, json, sys, time, statistics
host, port = sys.argv[1].split(':')
conn = http.client.HTTPConnection(host, int(port))
def req(method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={'content-type': 'application/json'})
    r = conn.getresponse(); data = r.read()
    assert r.status < 300, (method, path, r.status, data[:300])
    return data
ops = []
# 100 top-level channels in 10 groups, 900 threads under them (no group of their own).
for c in range(1, 101):
    ops.append({"op": "set_channel", "channel_id": str(c), "group_id": str(c % 10 + 1)})
for t in range(101, 1001):
    ops.append({"op": "set_channel", "channel_id": str(t), "parent_id": str(t % 100 + 1)})
for c in range(1, 1001):
    ops.append({"op": "message_created", "channel_id": str(c), "message_id": "100", "mentions": ["1"] if c % 7 == 0 else []})
    ops.append({"op": "join", "user_id": "1", "channel_id": str(c), "last_read_message_id": "0" if c % 3 == 0 else "100"})
    if c % 11 == 0:
        ops.append({"op": "settings", "user_id": "1", "channel_id": str(c), "muted_until": None})
for i in range(0, len(ops), 500):
    req('POST', '/v1/batch', {"ops": ops[i:i+500]})
states = json.loads(req('GET', '/v1/users/1/read-states'))['read_states']
assert len(states) == 1000, len(states)
groups = json.loads(req('GET', '/v1/users/1/groups'))
print('groups:', len(groups['groups']), 'e.g.', list(groups['groups'].items())[:2])
def timeit(path, n=500):
    for _ in range(50): req('GET', path)
    lat = []
    for _ in range(n):
        t = time.perf_counter(); req('GET', path); lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    return statistics.median(lat), lat[int(n * 0.99)]
for path in ['/v1/users/1/groups', '/v1/users/1/summary', '/v1/users/1/summary?group_id=3', '/v1/users/1/read-states']:
    med, p99 = timeit(path)
    print(f'{path}: median {med:.0f} us, p99 {p99:.0f} us')
