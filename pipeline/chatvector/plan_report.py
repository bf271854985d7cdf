"""Human-readable rendering of a plan (`chatvector plan`)."""

from __future__ import annotations

from chatvector.coefficients import layer_runs
from chatvector.plan import Plan
from chatvector.units import human_bytes

MAX_KEPT_LISTED = 12


def render(plan: Plan) -> str:
    r = plan.recipe
    lines = [f"Plan for {r.path} ({r.display_name})", "", "Sources"]
    rows = [("role", "source", "architecture", "layers", "vocab", "dtype")]
    for role, c in plan.checkpoints.items():
        rows.append((role, c.resolved.label, c.architecture, str(c.num_layers), str(c.vocab_size), c.dtype))
    lines += _table(rows)
    terms = " + ".join(f"{v.weight:g}·λ(t)·({v.path_of('chat')} − {v.path_of('base')})" for v in r.vectors)
    lines += ["", f"Formula: out = cp + {terms}", "", f"Coefficients λ(t) (default {r.coefficients.default:g})"]
    runs = layer_runs(r.coefficients.layer_values(plan.num_layers))
    lines.append("  layers   " + " | ".join(
        f"{a}: {v:g}" if a == b else f"{a}-{b}: {v:g}" for a, b, v in runs))
    for i, rule in enumerate(r.coefficients.modules):
        count = sum(1 for t in plan.tensors if t.reason.startswith(f"module rule {i} "))
        lines.append(f"  modules  [{i}] {rule.match!r} → {rule.value:g}  (decides {count} tensors)")
    special = plan.to_dict()["special_tokens"]
    if special:
        lines += ["", "Special tokens (rows copied from the chat model)"]
        lines += [f"  {s['token']!r}: cp row {s['cp_row']} ← chat row {s['chat_row']}" for s in special]
    out = plan.to_dict()["output"]
    shards = _shard_count([t.out_bytes for t in plan.tensors], r.output.shard_size)
    lines += ["", f"Output: {out['dtype']}, {len(plan.tensors)} tensors, {human_bytes(plan.output_bytes)} in "
              f"{shards} shard{'s' if shards != 1 else ''} (≤ {human_bytes(r.output.shard_size)} each); "
              f"chat template from {out['chat_template']}"]
    downloads = plan.download_files
    n_files = sum(len(f) for f in downloads.values())
    lines.append(f"Download: {human_bytes(plan.download_bytes)} in {n_files} weight files"
                 + (" (" + ", ".join(f"{role} {len(f)}" for role, f in downloads.items()) + ")" if downloads else ""))
    kept = [t for t in plan.tensors if t.kept]
    if kept:
        lines += ["", f"Tensors that keep cp's values ({len(kept)})"]
        lines += [f"  {t.name}: {t.kept}" for t in kept[:MAX_KEPT_LISTED]]
        if len(kept) > MAX_KEPT_LISTED:
            lines.append(f"  ... and {len(kept) - MAX_KEPT_LISTED} more (see --json)")
    partial = [t for t in plan.tensors if t.delta_rows is not None and not t.kept]
    if partial:
        lines += ["", "Vocabulary rows that keep cp's values (tokens only cp has)"]
        lines += [f"  {t.name}: rows {t.delta_rows}..{t.shape[0] - 1}" for t in partial]
    if plan.ignored:
        lines += ["", f"Ignored (not in cp): {len(plan.ignored)} tensors, e.g. {plan.ignored[0][0]} ({plan.ignored[0][1]})"]
    if plan.notes:
        lines += ["", "Notes"] + [f"  {n}" for n in plan.notes]
    return "\n".join(lines)


def _shard_count(sizes: list[int], shard_size: int) -> int:
    count, current = 0, 0
    for size in sizes:
        if count == 0 or (current + size > shard_size and current > 0):
            count, current = count + 1, 0
        current += size
    return max(count, 1)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
