#!/usr/bin/env python3
"""The deployment for one big site, worked out from measured per-node figures.

Reads the load tester's JSON reports of one sitting (a directory the bench scripts wrote:
idle-10k, redis3-idle-15k, redis3-churn, redis3-churn-chat, redis3-chat-5000), derives the
figures a deployment is sized by, and then:

1. on paper: nodes and Redis shards for the target (sockets, chatting share, message rate);
2. by simulation: one node dies at the busiest moment, its sockets reconnect to the others
   with the widget's back-off, and the simulation steps through time second by second with
   each node's CPU budget, the Redis shards' budget and the site's transition budget taken
   from the same figures, and reports how long until everyone is back, and what was the
   bottleneck at each step.

Only Python's standard library. Usage:

    loadtest/bench/plan.py DIR [--sockets 1000000] [--chatting 0.05] [--msg-per-conv-min 3]
        [--sockets-per-node 50000] [--cores-per-node 2] [--shards 3] [--headroom 0.5]
        [--idle-dir DIR2]   (idle-10k and redis3-idle-15k from another sitting)

Every derived figure is printed with the report it came from. The machine the figures were
measured on shares two cores among every gateway, Redis and the load tester, so the CPU figures
are per unit of work (µs per session, per message, per transition), not per-node ceilings.
"""

import argparse
import json
import math
import os
import random


def load(d, name):
    with open(os.path.join(d, name + ".json")) as f:
        return json.load(f)


def cpu_ms(report):
    last = report["gateway"]["samples"][-1]
    return last["cpu_ms"], last.get("redis_cpu_ms", 0)


def figures(d, idle_dir=None):
    """Per-unit costs from one sitting's reports (the idle memory from `idle_dir` if given)."""
    f = {}
    idle1 = load(idle_dir or d, "idle-10k")["idle"]
    idle3 = load(idle_dir or d, "redis3-idle-15k")["idle"]
    f["kib_per_socket_1"] = idle1["rss_per_socket_bytes"] / 1024
    f["kib_per_socket_3"] = idle3["rss_per_socket_bytes"] / 1024

    churn = load(d, "redis3-churn")
    gw, rd = cpu_ms(churn)
    n = churn["connections"]["ok"]
    f["gw_us_per_session"] = gw * 1000 / n
    f["redis_us_per_session"] = rd * 1000 / n
    f["sessions_held_3"] = churn["ramp"]["held_rate"]

    cc = load(d, "redis3-churn-chat")
    share = cc["settings"]["args"].get("chatting", 0.2)
    gw2, rd2 = cpu_ms(cc)
    n2 = cc["connections"]["ok"]
    chats = n2 * share
    # A chatting visitor costs a session plus a conversation's life (start and close: two
    # site transitions, their effects, a count): the rest of the CPU once sessions are paid.
    f["gw_us_per_conv"] = max(0.0, (gw2 * 1000 - n2 * f["gw_us_per_session"]) / chats)
    f["redis_us_per_conv"] = max(0.0, (rd2 * 1000 - n2 * f["redis_us_per_session"]) / chats)
    # Two transitions per conversation (start, close) at the rate that held.
    f["transitions_per_s_3"] = cc["ramp"]["held_rate"] * share * 2

    chat = load(d, "redis3-chat-5000")["gateway"]
    f["gw_us_per_msg"] = chat["cpu_us_per_message"]
    f["redis_us_per_msg"] = chat["redis_cpu_us_per_message"]
    return f


def paper(f, a):
    p = {}
    p["nodes_by_sockets"] = math.ceil(a.sockets / a.sockets_per_node)
    p["gw_gib"] = a.sockets * f["kib_per_socket_3"] / 1024 / 1024
    convs = a.sockets * a.chatting
    p["open_convs"] = convs
    p["msg_per_s"] = convs * a.msg_per_conv_min / 60
    p["conv_starts_per_s"] = convs / (a.conv_minutes * 60)
    p["transitions_per_s"] = p["conv_starts_per_s"] * a.transitions_per_conv
    p["sessions_per_s"] = a.sockets / (a.session_minutes * 60)
    cpu = (
        p["msg_per_s"] * f["gw_us_per_msg"]
        + p["sessions_per_s"] * f["gw_us_per_session"]
        + p["conv_starts_per_s"] * f["gw_us_per_conv"]
    ) / 1e6
    p["gw_cores"] = cpu
    p["nodes_by_cpu"] = math.ceil(cpu / (a.cores_per_node * a.headroom))
    p["nodes"] = max(p["nodes_by_sockets"], p["nodes_by_cpu"])
    redis = (
        p["msg_per_s"] * f["redis_us_per_msg"]
        + p["sessions_per_s"] * f["redis_us_per_session"]
        + p["conv_starts_per_s"] * f["redis_us_per_conv"]
    ) / 1e6
    p["redis_cores"] = redis
    # The site's own slot carries its transitions (one shard's core); messages, sessions and
    # conversations spread over the shards by their hash tags.
    p["redis_core_per_shard"] = redis / a.shards
    p["site_slot_share"] = p["transitions_per_s"] / f["transitions_per_s_3"]
    p["site_state_mib"] = convs * a.bytes_per_conv / 1024 / 1024
    return p


def storm(f, a, p, seed=7):
    """One node of `p['nodes']` dies; its sockets reconnect to the rest with back-off.

    Each second, every live node can spend `cores_per_node` cores; sessions cost
    gw_us_per_session, chatting ones one more transition (their count), which the site's slot
    can take at transitions_per_s_3 a second at most. A client that found no room tries again
    after a back-off doubling from 1 s to 30 s, with full jitter (the widget's)."""
    rng = random.Random(seed)
    lost = a.sockets // p["nodes"]
    live = p["nodes"] - 1
    budget_us = live * a.cores_per_node * 1e6 * a.headroom_storm
    # Clients: (next attempt second, back-off so far, chatting)
    waiting = [(rng.uniform(0, 1.0), 1.0, rng.random() < a.chatting) for _ in range(lost)]
    t = 0
    back = 0
    log = []
    while waiting and t < 600:
        due = [c for c in waiting if c[0] < t + 1]
        later = [c for c in waiting if c[0] >= t + 1]
        rng.shuffle(due)
        cpu = budget_us
        trans = f["transitions_per_s_3"] - p["transitions_per_s"]
        done = 0
        retry = []
        why = "nothing"
        for when, b, chatting in due:
            cost = f["gw_us_per_session"]
            if cpu < cost:
                why = "gateway CPU"
                retry.append((when, b, chatting))
                continue
            if chatting and trans < 1:
                why = "the site's transitions"
                retry.append((when, b, chatting))
                continue
            cpu -= cost
            if chatting:
                trans -= 1
            done += 1
        for when, b, chatting in retry:
            nb = min(b * 2, 30.0)
            later.append((t + 1 + rng.uniform(0, nb), nb, chatting))
        back += done
        log.append((t, done, len(retry), why))
        waiting = later
        t += 1
    return lost, t, log


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--sockets", type=int, default=1_000_000)
    ap.add_argument("--chatting", type=float, default=0.05, help="share with an open conversation")
    ap.add_argument("--msg-per-conv-min", type=float, default=3.0)
    ap.add_argument("--conv-minutes", type=float, default=10.0, help="a conversation's length")
    ap.add_argument("--session-minutes", type=float, default=5.0, help="a page view's length")
    ap.add_argument("--transitions-per-conv", type=float, default=6.0,
                    help="start, offer/accept, a few presence changes, close")
    ap.add_argument("--bytes-per-conv", type=int, default=600, help="a conversation in the site's state")
    ap.add_argument("--sockets-per-node", type=int, default=50_000)
    ap.add_argument("--cores-per-node", type=float, default=2.0)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--headroom", type=float, default=0.5, help="share of a node's CPU to plan on")
    ap.add_argument("--headroom-storm", type=float, default=0.8, help="share usable in a storm")
    ap.add_argument("--idle-dir", help="take the idle-memory reports from here instead")
    a = ap.parse_args()

    f = figures(a.dir, a.idle_dir)
    print("Measured (from %s):" % a.dir)
    for k, v in f.items():
        print("  %-24s %10.1f" % (k, v))
    p = paper(f, a)
    print("\nOn paper, %d sockets, %.0f%% chatting, %.1f messages a minute each:" % (
        a.sockets, a.chatting * 100, a.msg_per_conv_min))
    for k, v in p.items():
        print("  %-24s %12.2f" % (k, v))
    lost, secs, log = storm(f, a, p)
    print("\nSimulation: a node of %d dies, %d sockets reconnect to the other %d:" % (
        p["nodes"], lost, p["nodes"] - 1))
    for t, done, retry, why in log[:12]:
        print("  t=%3ds  back %6d  refused %6d  (%s)" % (t, done, retry, why if retry else "-"))
    print("  everyone back after %d s" % secs)


if __name__ == "__main__":
    main()
