"""Human-readable rendering of a plan (`chatvector plan`)."""

from __future__ import annotations

from chatvector.coefficients import layer_runs
from chatvector.plan import Plan
from chatvector.units import human_bytes

MAX_KEPT_LISTED = 12


def render(plan: Plan) -> str:
    lines = [f"Plan for {plan.recipe_path} ({plan.recipe_name})", "", "Sources"]
    rows = [("role", "source", "architecture", "layers", "vocab", "dtype", "license")]
    for role, s in plan.sources.items():
        rows.append((role, s.label, s.architecture, str(s.layers), str(s.vocab_size), s.dtype, s.license or "-"))
    lines += _table(rows)
    terms = " + ".join(f"{v.weight:g}·λ(t)·({v.chat} − {v.base})" for v in plan.vectors)
    lines += ["", f"Formula: out = cp + {terms}", "", f"Coefficients λ(t) (default {plan.default:g})"]
    runs = layer_runs(list(plan.layer_values))
    lines.append("  layers   " + " | ".join(f"{a}: {v:g}" if a == b else f"{a}-{b}: {v:g}" for a, b, v in runs))
    for i, rule in enumerate(plan.modules):
        lines.append(f"  modules  [{i}] {rule.match!r} → {rule.value:g}  (decides {rule.decides} tensors)")
    if plan.special_rows:
        lines += ["", "Special tokens (rows copied from the chat model)"]
        lines += [f"  {r.token!r}: cp row {r.cp_row} ← chat row {r.chat_row}" for r in plan.special_rows]
    out = plan.output
    shards = len(out.shards)
    eos = f"; end of turn {out.eos_token!r} (ids {', '.join(map(str, out.eos_ids))})" if out.eos_token else ""
    lines += ["", f"Output: {out.dtype}, {len(plan.tensors)} tensors, {human_bytes(plan.output_bytes)} in "
              f"{shards} shard{'s' if shards != 1 else ''} (≤ {human_bytes(out.shard_size)} each); "
              f"chat template from {out.chat_template_source} (in {out.chat_template_stored_in}){eos}"]
    downloads = plan.download_files
    n_files = sum(len(f) for f in downloads.values())
    lines.append(f"Download: {human_bytes(plan.download_bytes)} in {n_files} weight files"
                 + (" (" + ", ".join(f"{role} {len(f)}" for role, f in downloads.items()) + ")" if downloads else ""))
    card = plan.card
    lines.append(f"Card: license {card.license or 'none'}"
                 + (f" (from {card.license_source})" if card.license_source == "cp" else "")
                 + (f", languages {', '.join(card.language)}" if card.language else "")
                 + f", tags {', '.join(card.tags)}")
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
    if plan.warnings:
        lines += ["", "Warnings"] + [f"  {w}" for w in plan.warnings]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
