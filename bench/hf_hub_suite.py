"""Run huggingface_hub 2.4.0's own hub-facing tests against a fresh local Hub, with Xet on and with Xet off.

    .venv/bin/python bench/hf_hub_suite.py [SDIST] [--fixtures DIR] [--modes xet,noxet]
        [--files test_hf_api.py ...] [-k EXPR] [--workers N] [--run-out-of-scope] [--keep]

SDIST is huggingface_hub-2.4.0.tar.gz (downloaded with `pip download --no-deps --no-binary :all:` when left
out). Its tests/ folder is unpacked into a temporary folder and run there; the sdist ships no conftest.py, so
this script writes one (the `api` and `repo_factory` fixtures, a `mocker` stand-in, the suite markers:
`xet` runs only with Xet on, `no_xet` only with Xet off, `production`, `vcr` and `git_lfs` are skipped). The
sdist lacks tests/fixtures/ too (sample model cards): pass a huggingface_hub checkout's with --fixtures, else
the tests reading it fail and are counted apart ("no-fixtures"), not as in-scope failures.

For each mode a new LocalHub (in this process, on a free port, an empty store) gets the suite's users and
tokens (testing_constants: the dummy user, DVUser, the enterprise admin and its org, `valid_org_hub`), and
testing_constants.ENDPOINT_STAGING is rewritten to its URL, so the suite's staging Hub is the local one.
Mode `xet` leaves Xet on (hf_xet installed, the client's default), mode `noxet` sets HF_HUB_DISABLE_XET=1.

Tests in OUT_OF_SCOPE need what this Hub does not and should not serve (the real Hub's data, inference,
Spaces runtime, billing...); they are skipped (reason "out of scope: ...") unless --run-out-of-scope, in
which case they run and their failures are counted apart. "in-scope failures" is then the number to read.
Both modes take about 20 s each on 2 cores (pytest-xdist, 2 workers); pytest's log stays in the work folder
(--keep keeps it, with the Hub's access.log).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipeline"))

VERSION = "2.4.0"
DEFAULT_FILES = ("test_file_download.py", "test_hf_api.py", "test_repocard.py", "test_snapshot_download.py",
                 "test_hf_file_system.py", "test_xet_upload.py", "test_xet_download.py")
MODES = {"xet": {}, "noxet": {"HF_HUB_DISABLE_XET": "1"}}

# The suite's identities (tests/testing_constants.py) and the org its whoami test looks for.
USERS = {"__DUMMY_HUB_USER__": "hf_HubCITokenXXXXXXXXXXXXXXXXXXXXX",
         "DVUser": "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",
         "EnterpriseAdmin": "hf_enterprise_admin_token"}
ORGS = {"EnterpriseOrgPrivate": ("Enterprise Org", {"EnterpriseAdmin": "admin"}),
        "valid_org_hub": ("Dummy Hub Org", {"__DUMMY_HUB_USER__": "admin"})}

# Node-id prefixes (file, file::Class or file::Class::test) of tests out of scope, and why. A prefix ending
# in "*" matches any test whose id starts with what comes before it.
OUT_OF_SCOPE: dict[str, str] = {
    "test_hf_api.py::TestHfApiPublicProduction": "lists and reads the production Hub's public repos",
    "test_hf_api.py::TestSpaceAPIProduction": "the Spaces runtime (hardware, secrets, variables, sleep) on production",
    "test_hf_api.py::TestSpaceAPIMocked": "the Spaces runtime API (mocked answers of the production Hub)",
    "test_hf_api.py::TestCollectionAPI": "collections",
    "test_hf_api.py::TestAccessRequestAPI": "gated-repo access requests (accept, reject, grant: a web flow)",
    "test_hf_api.py::TestAccessRequestHiddenPII": "gated-repo access requests",
    "test_hf_api.py::TestUserApi": "user profiles, followers, likes (production data)",
    "test_hf_api.py::TestPaperApi": "papers (production data)",
    "test_hf_api.py::TestHfApiEndpoints::test_whoami_with_passing_token":
        "user profiles: a user's full name (this Hub knows users by their tokens' names only)",
    "test_hf_api.py::TestCommitApi::test_create_repo_private_by_default":
        "Enterprise organizations' private-by-default setting",
    "test_hf_api.py::TestWebhookApi": "webhooks",
    "test_hf_api.py::TestExpandPropertyType": "expand values of the production Hub's repos",
    "test_hf_api.py::TestHfApiInferenceCatalog": "Inference Endpoints' catalog",
    "test_hf_api.py::TestActivityApi": "the activity feed (likes, follows)",
    "test_repocard.py::TestMetadataUpdateOnMissingCard::test_metadata_update_missing_readme_on_space":
        "Spaces: the README.md the Hub writes into a new Space (its sdk and display settings)",
    "test_xet_upload.py::TestXetE2E": "uploads then downloads through the production Hub",
    "test_xet_upload.py::TestBucketXetUploadSkipSha256": "buckets",
}


def main() -> int:
    args = _parse_args()
    sdist = Path(args.sdist) if args.sdist else _download_sdist()
    work = Path(tempfile.mkdtemp(prefix="hf-hub-suite-"))
    tests = _unpack(sdist, work)
    if args.fixtures:
        import shutil

        shutil.copytree(args.fixtures, tests / "fixtures", dirs_exist_ok=True)
    results = {}
    for mode in args.modes.split(","):
        results[mode] = _run_mode(mode, tests, work, args)
    _print_summary(results, args.run_out_of_scope)
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sdist", nargs="?", help=f"huggingface_hub-{VERSION}.tar.gz (downloaded when left out)")
    p.add_argument("--modes", default="xet,noxet", help="comma-separated: xet (Xet on), noxet (HF_HUB_DISABLE_XET=1)")
    p.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="test files of the sdist's tests/")
    p.add_argument("-k", dest="keyword", help="pytest -k expression, to run a subset")
    p.add_argument("--workers", default="2", help="pytest-xdist workers (0: none; default 2)")
    p.add_argument("--timeout", type=int, default=900, help="seconds a mode may run before it is stopped")
    p.add_argument("--run-out-of-scope", action="store_true", help="run the OUT_OF_SCOPE tests too")
    p.add_argument("--fixtures", help="huggingface_hub's tests/fixtures folder (a git checkout's; the sdist lacks "
                   "it): without it the tests reading it fail, counted apart")
    p.add_argument("--keep", action="store_true", help="keep the unpacked tests, Hub stores and logs")
    args = p.parse_args()
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        p.error(f"--modes: unknown {', '.join(sorted(unknown))}; use xet and/or noxet")
    return args


def _download_sdist() -> Path:
    dest = Path(tempfile.mkdtemp(prefix="hf-sdist-"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dest),
                    f"huggingface_hub=={VERSION}"], check=True)
    return next(dest.glob("huggingface_hub-*.tar.gz"))


def _unpack(sdist: Path, work: Path) -> Path:
    """The sdist's tests/ under WORK/src, made a package (its tests import each other relatively)."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name]
        tar.extractall(work / "src", members=members, filter="data")
    tests = next((work / "src").glob("*/tests"))
    (tests / "__init__.py").write_text("")
    (tests / "conftest.py").write_text(CONFTEST)
    (tests.parent / "pytest.ini").write_text(PYTEST_INI)
    return tests


def _start_hub(root: Path):
    from chatvector.localhub import LocalHub, Org, Token

    tokens = [Token(name, secret, "write") for name, secret in USERS.items()]
    orgs = [Org(name, members, fullname) for name, (fullname, members) in ORGS.items()]
    return LocalHub(root, tokens=tokens, orgs=orgs, log_file=root / "access.log").start()


def _point_constants_at(tests: Path, url: str) -> None:
    """testing_constants.ENDPOINT_STAGING → URL (the suite builds its clients and expected URLs from it)."""
    path = tests / "testing_constants.py"
    text = re.sub(r'^ENDPOINT_STAGING = .*$', f'ENDPOINT_STAGING = "{url}"', path.read_text(), flags=re.M)
    path.write_text(text)


def _run_mode(mode: str, tests: Path, work: Path, args: argparse.Namespace) -> dict:
    """Run the files against a new Hub; {nodeid: (outcome, message)} with outcome passed|failed|skipped."""
    root = work / f"hub-{mode}"
    root.mkdir()
    hub = _start_hub(root)
    try:
        _point_constants_at(tests, hub.url)
        report = work / f"report-{mode}.xml"
        cmd = [sys.executable, "-m", "pytest", "-c", str(tests.parent / "pytest.ini"), "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", "-o", "junit_family=xunit1", *args.files]
        if args.workers != "0":
            cmd += ["-n", args.workers]
        if args.keyword:
            cmd += ["-k", args.keyword]
        env = _env(mode, work, hub.url, args.run_out_of_scope)
        started = time.monotonic()
        print(f"== {mode}: {hub.url}, {' '.join(args.files)}", flush=True)
        with open(work / f"pytest-{mode}.log", "w") as log:
            try:
                subprocess.run(cmd, cwd=tests, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"   {mode}: stopped after {args.timeout} s", flush=True)
        print(f"   {mode}: {time.monotonic() - started:.0f} s (log: {work / f'pytest-{mode}.log'})", flush=True)
        return _read_report(report) if report.exists() else {}
    finally:
        hub.close()


def _env(mode: str, work: Path, url: str, run_out_of_scope: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE",
                         "HUGGINGFACE_CO_STAGING")}  # staging mode would override HF_ENDPOINT
    env.update(MODES[mode])
    env.update(HF_ENDPOINT=url, HF_HOME=str(work / f"hf_home-{mode}"),
               HF_HUB_DISABLE_TELEMETRY="1", DISABLE_SYMLINKS_IN_WINDOWS_TESTS="1",
               HFSUITE_OUT_OF_SCOPE=json.dumps({} if run_out_of_scope else OUT_OF_SCOPE),
               HFSUITE_XET="0" if mode == "noxet" else "1")
    return env


def _read_report(report: Path) -> dict:
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        nodeid = f"{Path(file).name}::{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        nodeid = nodeid.replace(f"::{Path(file).stem}::", "::")  # module-level tests have the module as class
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (found.get("message") or "").splitlines()[0][:160] if found.get("message") else ""
                break
        if outcome == "failed" and results.get(nodeid, ("",))[0] == "passed":
            pass  # a teardown error after a pass: still a failure below
        if results.get(nodeid, ("",))[0] != "failed":
            results[nodeid] = (outcome, message)
    return results


def matching_reason(nodeid: str, scope: dict) -> "str | None":
    """The reason of the first entry of `scope` naming this test: its id, a prefix of its members or parameters
    ("file.py::Class"), or "prefix*". The suite's conftest.py runs this very function (CONFTEST holds its source)."""
    for prefix, reason in scope.items():
        if prefix.endswith("*") and nodeid.startswith(prefix[:-1]):
            return reason
        if nodeid == prefix or nodeid.startswith(prefix + "::") or nodeid.startswith(prefix + "["):
            return reason
    return None


def out_of_scope_reason(nodeid: str) -> str | None:
    return matching_reason(nodeid, OUT_OF_SCOPE)


def _in_scope_failures(cases: dict) -> list[str]:
    """The failed tests that count: not out of scope, not failing for want of tests/fixtures (see --fixtures)."""
    return sorted(n for n, (outcome, message) in cases.items()
                  if outcome == "failed" and not out_of_scope_reason(n) and "/tests/fixtures/" not in message)


def _print_summary(results: dict, ran_out_of_scope: bool) -> None:
    print("\nmode    passed  failed  skipped  out-of-scope(skipped or failed)  no-fixtures  in-scope failures")
    for mode, cases in results.items():
        count = {o: sum(1 for c in cases.values() if c[0] == o) for o in ("passed", "failed", "skipped")}
        oos = sum(1 for n, c in cases.items() if c[0] != "passed" and out_of_scope_reason(n))
        fixtures = sum(1 for n, c in cases.items() if c[0] == "failed" and "/tests/fixtures/" in c[1]
                       and not out_of_scope_reason(n))
        print(f"{mode:6}  {count['passed']:6}  {count['failed']:6}  {count['skipped']:7}  {oos:31}  {fixtures:11}"
              f"  {len(_in_scope_failures(cases)):17}")
    for mode, cases in results.items():
        scoped = _in_scope_failures(cases)
        print(f"\n{mode}: {len(scoped)} in-scope failures")
        for nodeid in scoped:
            print(f"  {nodeid}\n      {cases[nodeid][1]}")
        if ran_out_of_scope:
            oos = sorted(n for n, c in cases.items() if c[0] == "failed" and out_of_scope_reason(n))
            print(f"{mode}: {len(oos)} out-of-scope failures")


PYTEST_INI = """\
[pytest]
addopts = --strict-markers -p no:randomly
markers =
    api: repos, discussions, CLI output, utils
    transfer: upload/download tests
    inference: inference tests
    xet: transfer test that requires Xet on
    no_xet: transfer test that must run without Xet
    production: runs against the production Hub
    deprecated: expects a FutureWarning
    git_lfs: requires git-lfs
    vcr: replays recorded answers (pytest-recording)
"""

# The sdist's tests import `.conftest` (RepoFactory) and use fixtures its conftest.py defines; this is the
# part of it the hub-facing files need, written from how they use it.
CONFTEST_TEMPLATE = '''\
"""Written by chatvector's bench/hf_hub_suite.py: fixtures and markers for running against a local Hub."""

import json
import os
import uuid
from typing import Optional
from unittest import mock

import pytest

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoUrl

from .testing_constants import ENDPOINT_PRODUCTION, ENDPOINT_STAGING, TOKEN

XET_ON = os.environ.get("HFSUITE_XET") == "1"
OUT_OF_SCOPE = json.loads(os.environ.get("HFSUITE_OUT_OF_SCOPE", "{}"))


MATCHING_REASON

def _out_of_scope(nodeid: str) -> Optional[str]:
    return matching_reason(nodeid.split("/")[-1], OUT_OF_SCOPE)


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = _out_of_scope(item.nodeid)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"out of scope: {reason}"))
        elif "production" in item.keywords or "vcr" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="out of scope: needs the production Hub"))
        elif "git_lfs" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="git-lfs tests are off (RUN_GIT_LFS_TESTS)"))
        elif "xet" in item.keywords and not XET_ON:
            item.add_marker(pytest.mark.skip(reason="needs Xet on"))
        elif "no_xet" in item.keywords and XET_ON:
            item.add_marker(pytest.mark.skip(reason="needs Xet off"))


class RepoFactory:
    """Creates repos on the staging (local) Hub and deletes them at the end of the test."""

    def __init__(self, api: HfApi):
        self.api, self.created = api, []

    def __call__(self, repo_type: Optional[str] = None, *, repo_id: Optional[str] = None,
                 token: Optional[str] = None, **kwargs) -> RepoUrl:
        repo_id = repo_id or f"repo-{uuid.uuid4().hex[:12]}"
        url = self.api.create_repo(repo_id, repo_type=repo_type, token=token, **kwargs)
        self.created.append((url.repo_id, repo_type, token))
        return url

    def cleanup(self) -> None:
        for repo_id, repo_type, token in self.created:
            try:
                self.api.delete_repo(repo_id, repo_type=repo_type, token=token, missing_ok=True)
            except Exception:
                pass


@pytest.fixture(scope="session")  # class-scoped fixtures of the suite use it
def api() -> HfApi:
    return HfApi(endpoint=ENDPOINT_STAGING, token=TOKEN)


@pytest.fixture
def api_prod() -> HfApi:
    return HfApi(endpoint=ENDPOINT_PRODUCTION)


@pytest.fixture
def repo_factory(api):
    factory = RepoFactory(api)
    yield factory
    factory.cleanup()


class _Mocker:
    """The part of pytest-mock's `mocker` the suite uses: patch and patch.object, undone after the test."""

    def __init__(self):
        self._patches = []
        mocker = self

        class _Patch:
            def __call__(self, target, *args, **kwargs):
                return mocker._start(mock.patch(target, *args, **kwargs))

            def object(self, target, attribute, *args, **kwargs):
                return mocker._start(mock.patch.object(target, attribute, *args, **kwargs))

            def dict(self, target, *args, **kwargs):
                return mocker._start(mock.patch.dict(target, *args, **kwargs))

        self.patch = _Patch()
        self.MagicMock, self.Mock, self.ANY, self.call = mock.MagicMock, mock.Mock, mock.ANY, mock.call

    def _start(self, patcher):
        value = patcher.start()
        self._patches.append(patcher)
        return value

    def stopall(self):
        for patcher in reversed(self._patches):
            patcher.stop()
        self._patches.clear()


@pytest.fixture
def mocker():
    m = _Mocker()
    yield m
    m.stopall()
'''
# the conftest's scope rule is the one the summary uses (matching_reason), not a copy
CONFTEST = CONFTEST_TEMPLATE.replace("MATCHING_REASON", inspect.getsource(matching_reason))


if __name__ == "__main__":
    sys.exit(main())
