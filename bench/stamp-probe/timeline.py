#!/usr/bin/env python3
"""Merges the stamp files of bench/stamp-probe/run.sh and prints, for each
step of a sequential write through the leader, its median time (µs) after
the HTTP handler took the write. Each write is one "cycle", from one h_in
to the next; a label seen twice in a cycle is numbered (#1, #2)."""
import collections, glob, statistics, sys

out = sys.argv[1]
leader = open(f"{out}/leader.pid").read().strip()
try:  # VIA=follower: the follower the client writes to ("E.")
    entry = open(f"{out}/entry.pid").read().strip()
except FileNotFoundError:
    entry = leader
t0 = int(open(f"{out}/t0").read())
t1 = int(open(f"{out}/t1").read())
events = []
for f in glob.glob(f"{out}/*.stamps"):
    for line in open(f):
        t, pid, label, idx, extra = line.split()
        t = int(t)
        # Skip the warm-up and the end of the run.
        if t0 + 1_000_000_000 < t < t1 - 200_000_000:
            events.append((t, pid, label, int(idx), int(extra)))
events.sort()
client = {p for _, p, l, _, _ in events if l.startswith("c_")}
followers = sorted({p for _, p, _, _, _ in events
                    if p not in (leader, entry) and p not in client})
PER_TARGET = {"ae_call", "ae_commit_call", "repl_ok", "repl_commit_ok", "afc_carried",
              "early_spawn", "early_ans", "early_tx"}


def name(pid, label, extra):
    if pid in client:
        return "C." + label
    if pid == leader:
        # Per replication target; numbered in order of appearance.
        return "L.%s.t%d" % (label, targets.setdefault(extra, len(targets))) \
            if label in PER_TARGET else "L." + label
    if pid == entry:
        return "E." + label
    return "F%d.%s" % (followers.index(pid), label)


targets = {}
cycles, cur = [], None
for t, pid, label, idx, extra in events:
    if pid == entry and label == "h_in":
        if cur:
            cur["next"] = t
            cycles.append(cur)
        cur = {"t": t, "ev": []}
    elif cur:
        cur["ev"].append((t, name(pid, label, extra)))
offsets = collections.defaultdict(list)
for c in cycles:
    seen = collections.Counter()
    for t, n in c["ev"]:
        seen[n] += 1
        offsets["%s#%d" % (n, seen[n])].append((t - c["t"]) / 1000)
    offsets["next h_in"].append((c["next"] - c["t"]) / 1000)
rows = sorted((statistics.median(v), k, len(v)) for k, v in offsets.items()
              if len(v) > len(cycles) * 0.3)
print(f"{len(cycles)} writes; median µs after the handler took the write:")
for m, k, n in rows:
    print("%8.1f  %-32s n=%d" % (m, k, n))

# What the commit waited for: a write commits once two of the three copies
# are durable (the leader's sync, the followers' early answers), and
# RaftCore learns of it only once the leader's own sync is done (openraft
# 0.9 waits for it inline). Per write with both early answers: which came
# second, and how long after it the commit followed.
gate = collections.Counter()
after = collections.defaultdict(list)
for c in cycles:
    first = {}
    for t, n in c["ev"]:
        first.setdefault(n, (t - c["t"]) / 1000)
    answers = sorted(v for k, v in first.items() if k.startswith("L.early_ans"))
    if "L.commit" not in first or "L.synced" not in first or len(answers) < 2:
        gate["fewer than two early answers"] += 1
        continue
    order = sorted([(first["L.synced"], "the leader's sync"),
                     (answers[0], "the first early answer"),
                     (answers[1], "the second early answer")])
    t, what = order[1]
    gate[what] += 1
    after[what].append(first["L.commit"] - t)
print("\nthe second durable copy (what the commit waited for), and the median µs to the commit after it:")
for what, n in gate.most_common():
    extra = "  %.1f" % statistics.median(after[what]) if after[what] else ""
    print("  %-30s %5d writes%s" % (what, n, extra))

# The followers' frames: how many carried entries they appended (the rest
# were empty requests, or entries refused because they came out of order).
frames = collections.Counter(label for _, pid, label, _, _ in events
                             if pid != leader and pid not in client)
print("\nfollowers' frames: %d received, %d appended, for %d writes"
      % (frames["f_recv"], frames["append0"], len(cycles)))
