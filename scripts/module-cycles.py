#!/usr/bin/env python3
"""module-cycles.py: module cycles in src/ (`crate::a::b` and `super::`
references, test modules left out), at file level or top level; exits 1 when
there is one. Usage: python3 scripts/module-cycles.py [file|top]"""
import os, re, sys
from collections import defaultdict
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
mods = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs") or "/bin/" in d + "/": continue
        p = os.path.join(d, f); rel = os.path.relpath(p, root)[:-3]
        parts = rel.split("/")
        if parts[-1] in ("mod", "lib", "main"): parts = parts[:-1]
        mods["::".join(parts)] = p
def resolve(path):
    parts = path.split("::")
    while parts:
        m = "::".join(parts)
        if m in mods: return m
        parts = parts[:-1]
    return None
level = sys.argv[1] if len(sys.argv) > 1 else "file"
g = defaultdict(set)
for m, p in mods.items():
    if m in ("", "main"): continue
    src = open(p).read()
    # drop test modules
    src = re.split(r"#\[cfg\(test\)\]\s*mod tests", src)[0]
    refs = set(re.findall(r"crate::((?:[a-z_0-9]+::)*[a-z_0-9]+)", src))
    for grp in re.findall(r"use crate::\{([^;]*)\};", src, re.S):
        for item in re.findall(r"([a-z_0-9]+(?:::[a-z_0-9]+)*)", grp):
            refs.add(item)
    base = m.split("::")
    for s in re.findall(r"\bsuper::((?:[a-z_0-9]+::)*[a-z_0-9]+)", src):
        parent = base[:-1] if not p.endswith("mod.rs") else base[:-1]
        refs.add("::".join(parent + s.split("::")) if parent else s)
    for r in refs:
        t = resolve(r)
        if t is None or t == m or t == "": continue
        a, b = (m.split("::")[0], t.split("::")[0]) if level == "top" else (m, t)
        if a != b: g[a].add(b)
# Tarjan SCC
idx, low, st, on, out, n = {}, {}, [], set(), [], [0]
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in g[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: out.append(c)
sys.setrecursionlimit(10000)
for v in list(g):
    if v not in idx: sc(v)
print(f"{len(out)} cycle(s) at {level} level")
for c in out: print("  ", " <-> ".join(sorted(c)))
sys.exit(1 if out else 0)
