"""Reading py-spy's collapsed stacks (`record -f raw --nolineno --threads`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

# Leaf frames that mean "waiting": a pool thread blocked on its queue, the
# loop blocked in epoll_wait. py-spy does not always tell these apart itself.
IDLE_LEAVES = frozenset({"_worker", "StorePool._work", "EpollSelector.select"})
# Frames only the event loop's thread has (asyncio's and uvloop's).
LOOP_FRAMES = frozenset({"BaseEventLoop.run_forever", "Runner.run", "run_until_complete"})
# Where a request's own work starts, by path: aiohttp's handler (one request,
# parsed, to the handler) and the wire path (edgeproxy/wire*.py: heads read
# and hits answered in the protocol; revalidations and misses in its jobs).
TREE_ROOTS = {
    "RequestHandler._handle_request": "event loop: aiohttp's request handler",
    "_AnyMethodProtocol._answer_on_wire": "event loop: wire path, in the protocol",
    "_AnyMethodProtocol._run_wire_job": "event loop: wire path, its jobs (revalidations, misses)",
}


@dataclass
class Node:
    count: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def _file(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].rstrip(")") if "(" in frame else frame


def busy_stacks(lines: Iterable[str]) -> tuple[list[tuple[list[str], int]], int]:
    """(stacks that were on CPU, idle sample count); start-up imports dropped."""
    out, idle = [], 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames[0].startswith("thread"):
            frames = frames[1:]
        if not frames or any("importlib._bootstrap" in f for f in frames):
            continue
        if _name(frames[-1]) in IDLE_LEAVES:
            idle += int(count)
            continue
        out.append((frames, int(count)))
    return out, idle


def _tree_lines(node: Node, total: int, depth: int, floor: float, indent: str) -> list[str]:
    out = []
    kids = sorted(node.children.items(), key=lambda kv: -kv[1].count)
    for name, child in kids:
        share = 100 * child.count / total
        if share < floor:
            continue
        out.append(f"  {share:5.1f}%  {indent}{name}")
        if depth > 1:
            out += _tree_lines(child, total, depth - 1, floor, indent + "  ")
    return out


def summarize_profile(
    lines: Iterable[str], top: int = 15, per_request_us: float = 0.0, depth: int = 7
) -> str:
    """Where the busy samples went: by thread kind and path, a call tree
    under each path's root (TREE_ROOTS), self time by function and by file."""
    stacks, idle = busy_stacks(lines)
    total = sum(n for _, n in stacks)
    if not total:
        return "profile: no samples"
    kinds: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    roots = {name: Node() for name in TREE_ROOTS}
    for frames, n in stacks:
        names = [_name(f) for f in frames]
        self_fn[frames[-1]] += n
        self_file[_file(frames[-1])] += n
        # uvloop's loop is C: its thread shows Runner.run, never run_forever.
        if not LOOP_FRAMES.intersection(names):
            kinds["pool threads (store work off the loop)"] += n
            continue
        found = next((r for r in TREE_ROOTS if r in names), None)
        if found is None:
            kinds["event loop: protocol, callbacks, loop machinery"] += n
            continue
        kinds[TREE_ROOTS[found]] += n
        node = roots[found]
        for name in names[names.index(found) + 1 :][:depth]:
            node = node.children.setdefault(name, Node())
            node.count += n

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    head = f"profile: {total} busy samples ({idle} idle ones dropped); % of busy samples"
    if per_request_us:
        head += f"; CPU per request {per_request_us:.0f} us, so 1% = {per_request_us / 100:.1f} us"
    out = [head]
    out += [f"  {pct(n)}  {k}" for k, n in kinds.most_common()]
    for name, root in roots.items():
        if root.children:
            out.append(f"call tree under {name} (inclusive, >= 1%):")
            out += _tree_lines(root, total, depth, 1.0, "")
    out.append(f"top {top} functions by self time:")
    out += [f"  {pct(n)}  {k}" for k, n in self_fn.most_common(top)]
    out.append(f"top {top} files by self time:")
    out += [f"  {pct(n)}  {k}" for k, n in self_file.most_common(top)]
    return "\n".join(out)
