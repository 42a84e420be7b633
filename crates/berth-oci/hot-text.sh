#!/bin/bash
# Regenerates hot-text.ld: the functions one `berth-oci run` of /bin/true executes (in
# the runtime and in the container's init before its execve), which the release link
# places together (build.rs). The kernel maps 64 KiB or more of a file around each
# fault, so hot code spread over the whole 2.5 MiB .text mapped nearly all of it (peak
# RSS); put together it maps a fraction. A stale list only loses that gain: functions
# it does not name are laid out as before. Regenerate after larger changes to the run path:
#
#   cargo build --release -p berth-oci && crates/berth-oci/hot-text.sh
#   cargo build --release --workspace --bins && KEEP=1 crates/berth-oci/hot-text.sh
#
# Both builds: the workspace one unifies dependency features differently, which renames
# the instances of generic functions (the list names big generic families' instances
# exactly); KEEP=1 adds to the list instead of replacing it. The binary keeps its
# symbols for this (root Cargo.toml).
# Needs root, gdb (with python), jq and busybox; takes seconds. Each pass runs under gdb
# with a breakpoint on every function of the binary, recording the first hit of each.
# Run it in the setting the bench measures (inside the cgroup-v1 view of
# xtask/src/bench/runtime.rs); the host's hybrid cgroups add a function or two.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-$here/../../target/release/berth-oci}")
work=$(mktemp -d /tmp/berth-hot-text.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A busybox bundle running /bin/true, as the bench's.
mkdir -p "$work/bundle/rootfs/bin" "$work/ro"
cp /bin/busybox "$work/bundle/rootfs/bin/"
ln -s busybox "$work/bundle/rootfs/bin/true"
ln -s busybox "$work/bundle/rootfs/bin/sh"
"$bin" spec --bundle "$work/bundle"
jq '.process.terminal = false | .process.args = ["/bin/true"]' \
  "$work/bundle/config.json" >"$work/c.json"
mv "$work/c.json" "$work/bundle/config.json"
cp "$bin" "$work/ro/berth-oci"
nm "$bin" 2>/dev/null | awk '$2 == "t" || $2 == "T" {print $1, $3}' >"$work/syms"
[ -s "$work/syms" ] || { echo "$bin has no symbol table (build it with strip=false, see above)"; exit 1; }

cat >"$work/trace.py" <<'EOF'
import gdb, os
syms = [(int(a, 16), n) for a, n in (l.split() for l in open(os.environ['SYMS']))]
hits, seen = [], set()
class Hit(gdb.Breakpoint):
    def __init__(self, addr, name):
        super().__init__('*%#x' % addr, internal=True)
        self.name = name
    def stop(self):
        if self.name not in seen:
            seen.add(self.name)
            hits.append(self.name)
            gdb.post_event(lambda b=self: b.delete() if b.is_valid() else None)
        return False
for c in ['set pagination off', 'set confirm off', 'set detach-on-fork on',
          'set follow-fork-mode ' + os.environ['FOLLOW'], 'starti']:
    gdb.execute(c)
base = next(int(l.split()[0], 16)
            for l in gdb.execute('info proc mappings', to_string=True).splitlines()
            if l.split() and l.split()[-1].endswith('/berth-oci'))
for a, n in syms:
    Hit(base + a, n)
try:
    gdb.execute('continue')
except gdb.error:
    pass
open(os.environ['OUT'], 'w').write(''.join(h + '\n' for h in hits))
EOF

# The binary on a read-only bind mount: it runs as it is, without re-executing itself
# (reexec.rs), so gdb stays on the process that does the work. Two passes: the runtime
# (gdb follows the parent at the clone) and the init (gdb follows the child).
for follow in parent child; do
  SYMS="$work/syms" FOLLOW=$follow OUT="$work/hits-$follow" unshare -m sh -c '
    mount --bind "$1/ro" "$1/ro" && mount -o remount,bind,ro "$1/ro"
    exec gdb -q -batch -x "$1/trace.py" --args "$1/ro/berth-oci" --root "$1/state" \
      run --bundle "$1/bundle" "hot-text-$$"' sh "$work" \
    </dev/null >"$work/gdb-$follow.log" 2>&1 || { cat "$work/gdb-$follow.log"; exit 1; }
  [ -s "$work/hits-$follow" ] || { cat "$work/gdb-$follow.log"; echo "no hits"; exit 1; }
done

nm -S "$bin" >"$work/nm"
python3 - "$work/nm" "$here/hot-text.ld" "${KEEP:-0}" "$work/hits-parent" \
  "$work/hits-child" <<'EOF'
import collections, re, sys
nm, ld, keep, hitfiles = sys.argv[1], sys.argv[2], sys.argv[3] == '1', sys.argv[4:]
# A function's family: its name without what changes from build to build or tells
# instances of one generic function apart: the legacy hash (17h...E), LLVM's
# numbered copies (.123, .llvm.123), v0's instantiating crate (...Cs<id>_<len><crate>).
def family(n):
    n = re.sub(r'(\.llvm)?(\.[0-9]+)+$', '', n)
    n = re.sub(r'17h[0-9a-f]{16}E$', '', n)
    m = re.search(r'Cs[0-9A-Za-z]*_([0-9]+)([A-Za-z0-9_]+)$', n)
    if n.startswith('_R') and m and len(m.group(2)) == int(m.group(1)):
        n = n[:m.start()]
    elif n.startswith('_R'):
        n = re.sub(r'B[0-9A-Za-z]*_$', '', n)
    return n
size = collections.Counter()
for f in map(str.split, open(nm)):
    if len(f) == 4 and f[2] in 'tT':
        size[family(f[3])] += int(f[1], 16)
pats = [m.group(1) for m in re.finditer(r'\*\(\.text\.(\S+) ', open(ld).read())] if keep else []
for f in hitfiles:
    for n in map(str.strip, open(f)):
        fam = family(n)
        # The whole family when it is small (it survives rebuilds, and LLVM may keep
        # any instance's name for merged copies); of a big one (serde's generic
        # deserializers) only the instance that ran.
        pats.append(fam + '*' if size[fam] <= 16384 else n)
with open(ld, 'w') as out:
    out.write('/* GENERATED by hot-text.sh (see there): the functions a `run` of the busybox\n'
              '   bundle executes, placed together so start-up maps fewer pages of code. */\n'
              'SECTIONS {\n  .text.hot : {\n')
    # crt1's _start; then each function, also where LLVM put it for being cold
    # (#[cold] paths such as RawVec::grow_one still run at start-up).
    out.write('    *crt1.o(.text)\n')
    out.writelines(f'    *(.text.{p} .text.unlikely.{p})\n' for p in dict.fromkeys(pats))
    out.write('  }\n}\nINSERT BEFORE .text;\n')
print(f'{ld}: {len(dict.fromkeys(pats))} functions')
EOF
