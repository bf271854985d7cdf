"""`chatvector demo` (`make demo`): the whole publish, offline, on the embedded local Hub.

1. start the local Hub (state in .demo/hub), 2. generate and upload a tiny base/chat/cp triplet,
3. publish recipes/demo.yaml, 4. load the published model back and chat one turn, 5. publish again: nothing
changed, nothing pushed. Then it gives the published model's page: in a terminal it keeps serving it until
Enter or Ctrl-C; otherwise (CI, tests, output piped) it stops and prints how to serve the same state again.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from pathlib import Path

from chatvector.conventions import PROJECT_ROOT, shipped
from chatvector.errors import PipelineError
from chatvector.localhub import LocalHub, Token

# The checkout when running from one (`make demo`), else (an installed wheel) the working directory.
ROOT = PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else Path.cwd()
DEFAULT_RECIPE = shipped("recipes/demo.yaml")


def say(step: str, text: str) -> None:
    print(f"\n[{step}] {text}", flush=True)


def run_demo(root: Path = ROOT / ".demo", recipe_path: Path = DEFAULT_RECIPE) -> int:
    if "huggingface_hub" in sys.modules:  # its endpoint is fixed at import time (shared/hub-api.md §1.1)
        raise PipelineError("the demo must start before huggingface_hub is imported; run `chatvector demo`")
    root = Path(root).resolve()
    token = Token("demo", "hf_demo_" + secrets.token_hex(12), "write")
    hub = LocalHub(root / "hub", tokens=[token], log_file=root / "hub" / "access.log").start()
    os.environ.update(
        HF_ENDPOINT=hub.url, HF_TOKEN=token.secret, HF_HOME=str(root / "hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false",
    )
    try:
        code, repo_id = _steps(hub, root, recipe_path)
        finish(hub.url, repo_id, root, at_terminal=sys.stdin.isatty() and sys.stdout.isatty())
        return code
    finally:
        hub.stop()


def finish(url: str, repo_id: str, root: Path, at_terminal: bool, wait=None) -> None:
    """The demo's last words, the published model's page first. AT_TERMINAL (someone is there to look), the page
    stays served until WAIT returns (Enter or Ctrl-C); otherwise the Hub stops with the demo, and the message says
    how to serve the same state again."""
    if at_terminal:
        print("\n" + serving_message(url, repo_id, root), flush=True)
        (wait or _wait_for_enter)()
        print(serve_again_message(url, root), flush=True)
    else:
        print("\n" + final_message(url, repo_id, root), flush=True)


def _wait_for_enter() -> None:
    try:
        input()
    except (EOFError, KeyboardInterrupt):
        print()


def _steps(hub: LocalHub, root: Path, recipe_path: Path) -> tuple[int, str]:
    """The five steps; the exit code (1 when the second publish pushed again) and the published repo's id."""
    from chatvector.hub.client import connect, quiet_progress
    from chatvector.publish.publish import PublishOptions, publish
    from chatvector.recipe.recipe import load_recipe
    from chatvector.testing.tinymodels import TripletSpec, upload_model, write_triplet

    say("1/5", f"Local Hub serving {root / 'hub'} on {hub.url} (HF_ENDPOINT points there)")
    recipe = load_recipe(recipe_path)
    target = recipe.require_target()
    api = connect()

    say("2/5", "Generating a tiny Llama-style base, its chat model, and a cp with 20 extra Korean tokens")
    folders = write_triplet(root / "models", TripletSpec(arch="llama", extra_cp_tokens=20))
    roles = {"base": recipe.vectors[0].base, "chat": recipe.vectors[0].chat, "cp": recipe.cp}
    for role, source in roles.items():
        with quiet_progress():  # the sources are the demo's props: their uploads need no bars
            sha = upload_model(api, folders[role], source.repo_id)
        print(f"  {role:4} → {hub.url}/{source.repo_id} @ {sha[:10]}")

    say("3/5", f"Publishing {recipe_path.relative_to(ROOT) if recipe_path.is_relative_to(ROOT) else recipe_path}"
        " (plan → fetch → merge → verify → card → push)")
    result = publish(recipe, PublishOptions(out_dir=root / "out"), api=api)
    if result.changed:
        print(f"  one commit {result.commit[:10]}: {', '.join(result.added)}")
    else:
        print(f"  already published at {result.commit[:10]} from these exact inputs (an earlier demo run)")

    say("4/5", f"Loading {target.repo_id} back from the Hub and chatting one turn")
    with quiet_progress():  # the download's bars
        reply = chat_once(target.repo_id, "안녕하세요! Who are you?")
    print(f"  user:      안녕하세요! Who are you?\n  assistant: {reply!r}")
    print("  (a tiny random model answers gibberish; what matters is that the published repo loads, applies the"
          " chat model's template, and generation would stop at its <|eot_id|>)")

    say("5/5", "Publishing again: upstream did not change, so nothing is downloaded or pushed")
    again = publish(recipe, api=api)
    print(f"  {'nothing changed' if not again.changed else 'published again?!'}: head stays {again.commit[:10]}")

    return (0 if not again.changed else 1), target.repo_id


def serving_message(url: str, repo_id: str, root: Path) -> str:
    """The demo's last words at a terminal: the model's page is live until the user presses Enter."""
    return (f"Done. Published {repo_id}; its card is {_shown(root / 'out' / 'README.md')}\n"
            f"Serving the model page at {url}/{repo_id} — press Enter or Ctrl-C to stop")


def final_message(url: str, repo_id: str, root: Path) -> str:
    """The demo's last words when no one is at a terminal: its local Hub stops when the demo exits, so the page's
    link is given with the command that serves the same state on the same address (the card's links use it too),
    after which it opens."""
    return (f"Done. Published {repo_id}; its card is {_shown(root / 'out' / 'README.md')}\n"
            f"Model page: {url}/{repo_id}\n"
            f"The demo's local Hub stopped with it; to open the page, {serve_again_message(url, root, lead='')}")


def serve_again_message(url: str, root: Path, lead: str = "Stopped. To browse it again, ") -> str:
    """The command that serves the demo's Hub state again on URL's port: the printed links open again."""
    port = url.rsplit(":", 1)[1]
    return (f"{lead}serve the same state on the same address:\n"
            f"  {chatvector_command()} hub serve --root {shlex.quote(_shown(root / 'hub'))} --port {port}")


def chatvector_command() -> str:
    """`chatvector` as a shell here can run it: by name when PATH finds this very installation, else the console
    script beside this interpreter (`.venv/bin/chatvector`: `make demo` does not put .venv/bin on PATH), else
    `python -m chatvector` with this interpreter."""
    import shutil

    script = Path(sys.executable).parent / "chatvector"  # (not resolved: a venv's python is a symlink)
    on_path = shutil.which("chatvector")
    if script.is_file() and on_path and Path(on_path).resolve() == script.resolve():
        return "chatvector"
    if script.is_file():
        return shlex.quote(_shown(script))
    return f"{shlex.quote(_shown(Path(sys.executable)))} -m chatvector"


def _shown(path: Path) -> str:
    """PATH relative to the working directory when it lies inside it (`.demo/hub`), else as it is."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def chat_once(repo_id: str, message: str) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar: 39 tiny tensors need none
    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    model = AutoModelForCausalLM.from_pretrained(repo_id)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
