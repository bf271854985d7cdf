"""Everything in the output folder besides the weights, exactly as the plan decided it.

The output is cp's model (its config and its tokenizer, extended vocabulary included) that talks like the
chat model: the plan gives it the chat model's chat template and end-of-turn token, in the tokenizer and in
`generation_config.json`, so generation stops at the end of a turn. This stage only copies cp's files and
applies the plan's edits; it decides nothing and reads no other source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chatvector.plan.plan import Plan, SupportFile


def write_support_files(plan: Plan, cp_folder: Path, out_dir: Path) -> list[str]:
    """Write config, generation config, tokenizer files and chat template into out_dir; returns their names."""
    for file in plan.output.support_files:
        _write(file, Path(cp_folder), Path(out_dir))
    return sorted(f.name for f in plan.output.support_files)


def _write(file: SupportFile, cp_folder: Path, out_dir: Path) -> None:
    target = out_dir / file.name
    if file.text is not None:
        target.write_text(file.text, encoding="utf-8")
    elif not file.is_json:
        shutil.copyfile(cp_folder / file.copy_from, target)
    else:
        data = json.loads((cp_folder / file.copy_from).read_text(encoding="utf-8")) if file.copy_from else {}
        data.update(file.set)
        for key in file.unset:
            data.pop(key, None)
        target.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
