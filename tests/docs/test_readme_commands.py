"""Every command in the READMEs and docs runs as written (issue 20, item 6).

The commands are the lines of ```bash / sh / shell / console blocks in README.md,
packages/*/README.md, services/*/README.md and docs/**/*.md, and the inline commands that say where
a figure comes from (`python benchmarks/X.py ...`, `nlprec run pipelines/X.yaml ...`, also in
benchmarks/RESULTS.md). Each is checked by what it is, without running anything expensive:

- `make X ...`: `make -n X ...` has commands, and the nlprec commands it would run pass these checks;
- `nlprec ...`, `nlprec-<package> <verb> ...`, `python -m nlprec....`: the arguments parse with the
  command's own argparse parser (stopped in `parse_args`, before the command does anything) and
  `<command> [<verb>] --help` answers in under HELP_SECONDS; `nlprec list` runs;
- `nlprec run pipelines/X.yaml [--set ...] [--force STEP]`: the pipeline validates with those
  overrides (keys, types, references, every step's config) and STEP is one of its steps;
- `models:/NAME@alias` in a command: some pipeline registers NAME (check_model_references);
- `python benchmarks/X.py ...`: the script exists and its arguments parse;
- `torchrun ... -m nlprec.core.launch module:worker ...`: torchrun's and the launcher's arguments
  parse and the worker imports;
- `mlflow ...`: the arguments parse with MLflow's own click commands;
- `curl` against `nlprec-serve` (port 8000): the same request is sent to the app (fake models) and
  answered 200; a curl against another server names the test that covers it (COVERED_BY);
- `pip install NAMES`: every name is pinned in requirements/lock.txt; `export PYTHONPATH=...`: every
  folder exists; the rest is in SKIPPED with the reason.

```yaml blocks are checked too: a whole pipeline is the file of that name (every key shown has the
file's value), `steps:` entries / `search:` / `report:` validate with the runner's models, and a
`service.yaml` passes `nlprec-serve --config service.yaml --check`.

Placeholders are given a fixture value: `<student dir>` becomes `placeholder`, an optional
`[--engine ray]` its content. A wrong command in a file this test's owner does not edit is listed in
KNOWN_BROKEN (a strict xfail: the test fails once it is fixed, so the entry is removed then).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import resource
import runpy
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HELP_SECONDS = 2.0
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PLACEHOLDER = "placeholder"

SKIPPED = {
    "mkdir": "makes a folder for the tracking server's store: nothing of ours to check",
}
EXAMPLE_SCRIPTS = {
    "train.py": "the reader's training script, sketched in the Python block above it (docs/scaling.md)",
}
COVERED_BY = {
    "127.0.0.1:5001/invocations": (
        "tests/service/test_registered_flavors.py",
        "test_mlflow_models_serve_answers_a_search",
    ),
}
KNOWN_BROKEN: list[tuple[str, str, str]] = []  # (file, how the command starts, what is wrong and the fix): their owners fix them


class Broken(AssertionError):
    """A command that would not run as written."""


# ----------------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class Command:
    file: str  # relative to the repository
    line: int
    text: str  # as written, continuation lines joined
    inline: bool = False  # an inline `...` span (a figure's command), not a code block

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
FIGURE_COMMAND = re.compile(
    r"^(?:\.venv/bin/)?(?:python3? benchmarks/\S+\.py|nlprec run pipelines/|torchrun .*benchmarks/)"
)


def documentation_files() -> list[Path]:
    files = [REPO / "README.md", *sorted(REPO.glob("packages/*/README.md"))]
    files += sorted(REPO.glob("services/*/README.md")) + sorted(REPO.glob("docs/**/*.md"))
    return [path for path in files if path.is_file()]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def block_commands(path: Path) -> list[Command]:
    """The commands of the shell blocks of `path`, one per logical line."""
    text, relative = path.read_text(), str(path.relative_to(REPO))
    commands = []
    for block in FENCE.finditer(text):
        if block.group(1) not in SHELL_LANGUAGES:
            continue
        first_line = _line_of(text, block.start(2))
        pending, start = "", 0
        for number, line in enumerate(block.group(2).splitlines(), first_line):
            if block.group(1) == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            logical, pending = (pending + line).strip(), ""
            if logical and not logical.startswith("#"):
                commands.append(Command(relative, start, " ".join(logical.split())))
    return commands


def figure_commands(path: Path) -> list[Command]:
    """Inline spans outside code blocks that name the command behind a figure."""
    text, relative = path.read_text(), str(path.relative_to(REPO))
    blanked = FENCE.sub(lambda block: "\n" * block.group(0).count("\n"), text)
    commands = []
    for span in INLINE.finditer(blanked):
        if FIGURE_COMMAND.match(span.group(1)):
            written = re.split(r"\s\(", span.group(1))[0].strip()  # "... (on the device)" is prose
            commands.append(
                Command(relative, _line_of(blanked, span.start()), written, inline=True)
            )
    return commands


def all_commands() -> list[Command]:
    commands = []
    for path in documentation_files():
        commands += block_commands(path) + figure_commands(path)
    commands += figure_commands(REPO / "benchmarks" / "RESULTS.md")
    return commands


def yaml_blocks() -> list[Command]:
    """The ```yaml blocks of the documents (a pipeline, a part of one, a service configuration)."""
    blocks = []
    for path in documentation_files():
        text = path.read_text()
        for block in FENCE.finditer(text):
            if block.group(1) == "yaml":
                where = str(path.relative_to(REPO))
                blocks.append(Command(where, _line_of(text, block.start(2)), block.group(2)))
    return blocks


def with_fixture_values(text: str) -> str:
    """`<placeholder>` -> a fixture value; `[--option value]` -> its content."""
    text = re.sub(r"<[^<>]+>", PLACEHOLDER, text)
    return re.sub(r"\[(--[^\[\]]+)\]", r"\1", text)


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command of a shell line (split at `&&`, `||`, `;`, `|`)."""
    lexer = shlex.shlex(with_fixture_values(text), posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if set(token) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [words for words in [*commands, current] if words]


def split_environment(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """`A=1 B=2 program args` -> ({A: 1, B: 2}, [program, args])."""
    environment = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words[0].partition("=")
        environment[key] = value
        words = words[1:]
    return environment, words


def program_name(word: str) -> str:
    name = word.removeprefix(".venv/bin/").removeprefix(f"{BIN}/")
    return "python" if name in {"python3", "python3.11"} else name


# ------------------------------------------------------------------------ parsing without running


class _Parsed(BaseException):
    """Raised by the patched `parse_args` once the real parse succeeded (never caught by a CLI)."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace):
        super().__init__()
        self.parser, self.namespace = parser, namespace


def parse_without_running(
    main: Callable[[], object], argv: list[str]
) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Call `main()` with `sys.argv = argv` and stop it as soon as argparse has parsed them."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(self, original(self, args, namespace))

    errors = io.StringIO()
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stderr(errors),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            main()
        except _Parsed as parsed:
            return parsed.parser, parsed.namespace
        except SystemExit:
            raise Broken(errors.getvalue().strip() or f"{argv[0]} exited while parsing") from None
    raise Broken(f"{argv[0]} returned without parsing its arguments with argparse")


def parse_with(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            return parser.parse_args(args)
        except SystemExit:
            raise Broken(errors.getvalue().strip()) from None


def verb_of(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """The sub-command word of `args` where the parser has sub-commands (for `--help`)."""
    has_verbs = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    positional = [word for word in args if not word.startswith("-")]
    return positional[:1] if has_verbs else []


_help_seconds: dict[tuple[str, ...], float] = {}


def check_help_is_quick(command: list[str]) -> None:
    """`command --help` exits 0 having used under HELP_SECONDS of CPU (user + system, the process
    and its children: on a busy shared machine wall time measures the neighbours)."""
    key = tuple(command)
    if key not in _help_seconds:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise Broken(f"{' '.join(command)} --help: {done.stderr.strip()[-500:]}")
        _help_seconds[key] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if _help_seconds[key] >= HELP_SECONDS:
        raise Broken(f"{' '.join(command)} --help took {_help_seconds[key]:.1f} s of CPU")


# ---------------------------------------------------------------------------------------- checks


def check_model_references(words: list[str]) -> None:
    """A `models:/NAME@alias` names what a pipeline registers: NAME is a pipeline's name, appears
    in a pipeline file (`register_as: NAME`), or is `<pipeline>-<part>` (a per-task name)."""
    stems = {path.stem for path in (REPO / "pipelines").glob("*.yaml")}
    texts = "\n".join(path.read_text() for path in (REPO / "pipelines").glob("*.yaml"))
    for word in words:
        for name in re.findall(r"models:/([\w.-]+)@", word):
            if name in stems or any(name.startswith(f"{stem}-") for stem in stems):
                continue
            if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", texts):
                raise Broken(f"models:/{name}@...: no pipeline registers a model named {name!r}")


def check_pipeline_run(namespace: argparse.Namespace) -> None:
    from nlprec.core.spec import load_pipeline

    path = REPO / namespace.pipeline
    if not path.is_file():
        raise Broken(f"{namespace.pipeline}: no such pipeline")
    declared = (yaml.safe_load(path.read_text()) or {}).get("params") or {}
    for override in namespace.overrides:  # the runner accepts a parameter nothing reads
        key = override.partition("=")[0]
        if key.startswith("params.") and key.split(".")[1] not in declared:
            raise Broken(f"--set {key}: {namespace.pipeline} declares params {sorted(declared)}")
    try:
        pipeline = load_pipeline(path, namespace.overrides)
    except Exception as error:  # a UserError names the key; anything else is as broken
        raise Broken(f"{namespace.pipeline} does not validate: {error}") from None
    steps = {step.spec.name for step in pipeline.steps}
    if set(namespace.force) - steps:
        raise Broken(f"--force {sorted(set(namespace.force) - steps)}: steps are {sorted(steps)}")


def check_nlprec_namespace(namespace: argparse.Namespace) -> None:
    if namespace.command == "run":
        check_pipeline_run(namespace)
    elif namespace.command == "list":
        from nlprec.core.cli import main

        with contextlib.chdir(REPO), contextlib.redirect_stdout(io.StringIO()):
            if main(["list"]) != 0:
                raise Broken("nlprec list failed")


@functools.cache
def console_script(name: str) -> Callable[[], object]:
    found = importlib.metadata.entry_points(group="console_scripts", name=name)
    ours = [entry for entry in found if entry.dist and entry.dist.name.startswith("nlprec")]
    if not ours:
        raise Broken(
            f"{name}: no such command (no installed nlprec package has this console script)"
        )
    return ours[0].load()


def check_console_script(words: list[str]) -> None:
    name = program_name(words[0])
    parser, namespace = parse_without_running(console_script(name), [name, *words[1:]])
    if name == "nlprec":
        check_nlprec_namespace(namespace)
    check_help_is_quick([str(BIN / name), *verb_of(parser, words[1:])])


def check_module(module: str, args: list[str]) -> None:
    if module == "pytest":
        missing = [
            a for a in args if a.startswith("tests/") and not (REPO / a.split("::")[0]).exists()
        ]
        if missing:
            raise Broken(f"no such test file: {missing}")
        return
    if not module.startswith("nlprec."):
        raise Broken(f"python -m {module}: no check for this module (add one)")
    if importlib.util.find_spec(module) is None:
        raise Broken(f"python -m {module}: no such module")
    parser, namespace = parse_without_running(
        lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), [module, *args]
    )
    if module == "nlprec.core.cli":
        check_nlprec_namespace(namespace)
    check_help_is_quick([sys.executable, "-m", module, *verb_of(parser, args)])


def check_script(script: str, args: list[str]) -> None:
    if Path(script).name in EXAMPLE_SCRIPTS:
        pytest.skip(f"{script}: {EXAMPLE_SCRIPTS[Path(script).name]}")
    path = REPO / script
    if not path.is_file():
        raise Broken(f"{script}: no such file")
    if "parse_args(" not in path.read_text():
        if args:
            raise Broken(f"{script} takes no arguments, but is given {args}")
        return
    with mock.patch.object(sys, "path", [str(path.parent), *sys.path]):  # as `python script` has it
        parse_without_running(
            lambda: runpy.run_path(str(path), run_name="__main__"), [script, *args]
        )


def check_python(words: list[str]) -> None:
    args = words[1:]
    if args[:1] == ["-m"]:
        check_module(args[1], args[2:])
    elif args[:1] == ["-c"]:
        pytest.skip("inline Python: nothing to parse")
    else:
        check_script(args[0], args[1:])


def check_torchrun(words: list[str]) -> None:
    from torch.distributed.run import get_args_parser

    namespace = parse_with(get_args_parser(), words[1:])
    if namespace.module and namespace.training_script == "nlprec.core.launch":
        from nlprec.core import launch
        from nlprec.core.errors import UserError

        argv = ["nlprec.core.launch", *namespace.training_script_args]
        _, launched = parse_without_running(launch.main, argv)
        try:
            launch.import_worker(launched.worker)
        except UserError as error:
            raise Broken(str(error)) from None
    elif namespace.module:
        check_module(namespace.training_script, namespace.training_script_args)
    else:
        check_script(namespace.training_script, namespace.training_script_args)


def check_mlflow(words: list[str]) -> None:
    import click
    from mlflow.cli import cli

    def parse(command: click.Command, args: list[str], parent=None, name="mlflow") -> None:
        context = command.make_context(name, list(args), parent=parent)
        if isinstance(command, click.Group):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rest = [*context.protected_args, *context.args]
            name, sub, remaining = command.resolve_command(context, rest)
            parse(sub, remaining, context, name)

    try:
        parse(cli, words[1:])
    except click.UsageError as error:
        raise Broken(f"mlflow {' '.join(words[1:])}: {error.format_message()}") from None


@dataclass
class CurlRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None


def parse_curl(args: list[str]) -> CurlRequest:
    parser = argparse.ArgumentParser(prog="curl", add_help=False)
    parser.add_argument("url")
    parser.add_argument("-s", "--silent", action="store_true")
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("-d", "--data", default=None)
    parser.add_argument("-X", "--request", default=None)
    namespace = parse_with(parser, args)
    headers = dict(h.split(":", 1) for h in namespace.header)
    method = namespace.request or ("POST" if namespace.data is not None else "GET")
    url = namespace.url if "://" in namespace.url else f"http://{namespace.url}"
    return CurlRequest(
        method, url, {k.strip(): v.strip() for k, v in headers.items()}, namespace.data
    )


def _service_support():
    if "service_support" not in sys.modules:
        path = REPO / "tests" / "service" / "support.py"
        spec = importlib.util.spec_from_file_location("service_support", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["service_support"] = module
        spec.loader.exec_module(module)
    return sys.modules["service_support"]


def send_to_service(request: CurlRequest, folder: Path) -> None:
    """The request, sent as written to the app (fake models) with its lifespan running."""
    from nlprec.service.config import ServiceConfig

    support = _service_support()
    support.fakes.FakeEngine(support.DOCUMENTS).save(folder / "ranking")
    support.fakes.FakeRecommender(support.EVENTS).save(folder / "sessionrec")
    config = ServiceConfig.model_validate({
        "ranking_model": str(folder / "ranking"), "sessionrec_model": str(folder / "sessionrec"),
        "state_dir": folder / "state", "token": support.TOKEN,
    })  # fmt: skip
    path = request.url.split("/", 3)[3] if request.url.count("/") >= 3 else ""

    async def send():
        async with support.running(config) as client:
            return await client.request(
                request.method, f"/{path}", headers=request.headers, content=request.body
            )

    response = asyncio.run(send())
    if response.status_code != 200:
        raise Broken(f"{request.method} /{path}: {response.status_code} {response.text[:500]}")


def check_curl(words: list[str], folder: Path) -> None:
    request = parse_curl(words[1:])
    try:
        json.loads(request.body or "null")  # the body must be JSON as written
    except ValueError as error:
        raise Broken(f"curl -d: not JSON ({error})") from None
    target = request.url.split("://", 1)[1]
    host = target.split("/", 1)[0]
    if host in {"localhost:8000", "127.0.0.1:8000"}:  # nlprec-serve's default address
        send_to_service(request, folder)
        return
    if target not in COVERED_BY:
        raise Broken(f"curl {target}: neither the service nor a test in COVERED_BY")
    test_file, test_name = COVERED_BY[target]
    source = (REPO / test_file).read_text()
    if f"def {test_name}(" not in source or target.split("/", 1)[1] not in source:
        raise Broken(f"{test_file}::{test_name} does not exist or does not call /{target}")


def locked_names() -> set[str]:
    lock = (REPO / "requirements" / "lock.txt").read_text()
    return {normalized(m) for m in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.M)}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_pip(words: list[str]) -> None:
    args = words[words.index("install") + 1 :] if "install" in words else []
    takes_value = {
        "--find-links",
        "-f",
        "-r",
        "--requirement",
        "--index-url",
        "-i",
        "--extra-index-url",
    }
    names, skip_next = [], False
    for word in args:
        if skip_next:
            skip_next = False
        elif word in takes_value:
            skip_next = True
        elif not word.startswith("-"):
            names.append(re.split(r"[<>=\[]", word)[0])
    unlocked = [name for name in names if normalized(name) not in locked_names()]
    if unlocked:
        raise Broken(f"pip install {unlocked}: not pinned in requirements/lock.txt")


def check_export(words: list[str]) -> None:
    for assignment in words[1:]:
        key, _, value = assignment.partition("=")
        if key == "PYTHONPATH":
            missing = [part for part in value.split(":") if not (REPO / part).is_dir()]
            if missing:
                raise Broken(f"PYTHONPATH: no such folder {missing}")


_make_outputs: dict[tuple[str, ...], str] = {}


def check_make(words: list[str], folder: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    key = tuple(words[1:])
    if key not in _make_outputs:
        done = subprocess.run(["make", "--no-print-directory", "-n", *key], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0 or "Nothing to be done" in done.stdout + done.stderr:
            raise Broken(f"make -n {' '.join(key)}: {(done.stderr or done.stdout).strip()[-500:]}")
        _make_outputs[key] = done.stdout
    for words in make_recipe_commands(_make_outputs[key]):  # what the target runs, checked in turn
        if re.fullmatch(r"(\.venv/bin/)?nlprec(-\w+)?", words[0]):
            check_words(words, folder)


LOOP = re.compile(r"for (\w+) in ([^;]+);\s*do\s+(.*?);\s*done")


def unrolled(loop: re.Match) -> str:
    name, values, body = loop.groups()
    return "; ".join(body.replace(f"${name}", value) for value in values.split())


def make_recipe_commands(printed: str) -> list[list[str]]:
    """The simple commands `make -n` printed, a shell `for V in A B; do ...; done` loop unrolled."""
    commands = []
    for line in printed.replace("\\\n", " ").splitlines():
        line = LOOP.sub(unrolled, line)
        commands += [words for words in simple_commands(line) if "$" not in " ".join(words)]
    return commands


def check_words(words: list[str], folder: Path) -> None:
    environment, words = split_environment(words)
    if not words:
        return
    program = program_name(words[0])
    check_model_references(words)
    with mock.patch.dict(os.environ, environment):
        if program in SKIPPED:
            pytest.skip(f"{program}: {SKIPPED[program]}")
        elif program == "make":
            check_make(words, folder)
        elif program == "nlprec" or program.startswith("nlprec-"):
            check_console_script(words)
        elif program == "python":
            check_python(words)
        elif program == "torchrun":
            check_torchrun(words)
        elif program == "mlflow":
            check_mlflow(words)
        elif program == "curl":
            check_curl(words, folder)
        elif program == "pip":
            check_pip(words)
        elif program == "export":
            check_export(words)
        else:
            raise Broken(f"{program}: not a command this repository provides, and no check for it")


def check_command(text: str, folder: Path) -> None:
    for words in simple_commands(text):
        check_words(words, folder)


def shown_in(shown: object, actual: object) -> bool:
    """Every key a document shows has the file's value (a document may leave keys out)."""
    if isinstance(shown, dict):
        return isinstance(actual, dict) and all(
            key in actual and shown_in(value, actual[key]) for key, value in shown.items()
        )
    if isinstance(shown, list):
        return (
            isinstance(actual, list)
            and len(shown) == len(actual)
            and all(shown_in(a, b) for a, b in zip(shown, actual, strict=True))
        )
    return shown == actual


def check_pipeline_copy(data: dict) -> None:
    """A whole pipeline in a document is the file of that name, as it is now."""
    from nlprec.core.spec import PipelineSpec

    PipelineSpec.model_validate(data)
    path = REPO / "pipelines" / f"{data['name']}.yaml"
    if not path.is_file():
        raise Broken(f"a pipeline named {data['name']!r}, but there is no {path.relative_to(REPO)}")
    if not shown_in(data, yaml.safe_load(path.read_text())):
        raise Broken(f"differs from {path.relative_to(REPO)}: copy the file's current text")


def check_service_configuration(text: str, folder: Path) -> None:
    """`nlprec-serve --config service.yaml --check` with the document's file."""
    from nlprec.service.cli import main

    (folder / "service.yaml").write_text(text)
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        status = main(["--config", str(folder / "service.yaml"), "--check"])
    if status != 0:
        raise Broken(f"nlprec-serve --config service.yaml --check: {errors.getvalue().strip()}")


def check_yaml_block(text: str, folder: Path) -> None:
    from nlprec.core.spec import ReportSpec, SearchSpec, StepSpec, import_step_function
    from pydantic import ValidationError

    try:
        data = yaml.safe_load(text)
        if isinstance(data, list):  # `steps:` entries
            for step in map(StepSpec.model_validate, data):
                import_step_function(step.uses, "document", f"steps.{step.name}.uses")
        elif isinstance(data, dict) and {"name", "steps"} <= set(data):
            check_pipeline_copy(data)
        elif isinstance(data, dict) and "service.yaml" in text.splitlines()[0]:
            check_service_configuration(text, folder)
        elif isinstance(data, dict) and set(data) == {"search"}:
            SearchSpec.model_validate(data["search"])
        elif isinstance(data, dict) and set(data) == {"report"}:
            ReportSpec.model_validate(data["report"])
        else:
            raise Broken("no check for this YAML block: add one")
    except (yaml.YAMLError, ValidationError) as error:
        raise Broken(str(error)) from None
    except Exception as error:  # the spec's own errors name the key
        if isinstance(error, Broken):
            raise
        raise Broken(f"{type(error).__name__}: {error}") from None


# ----------------------------------------------------------------------------------------- tests

COMMANDS = all_commands()


def known_broken(command: Command) -> str | None:
    for file, start, reason in KNOWN_BROKEN:
        if command.file == file and command.text.startswith(start):
            return reason
    return None


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.file}:{c.line}")
def test_command_runs_as_written(command: Command, tmp_path: Path, request):
    if reason := known_broken(command):
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True, raises=Broken))
    try:
        check_command(command.text, tmp_path)
    except Broken as error:
        raise Broken(f"{command}\n  -> {error}") from None


@pytest.mark.parametrize("block", yaml_blocks(), ids=lambda b: f"{b.file}:{b.line}")
def test_yaml_block_is_valid_as_written(block: Command, tmp_path: Path):
    try:
        check_yaml_block(block.text, tmp_path)
    except Broken as error:
        raise Broken(f"{block.file}:{block.line}: ```yaml block\n  -> {error}") from None


def test_the_documents_hold_commands():
    """The extraction finds the blocks (a changed fence syntax would silently check nothing)."""
    files = {command.file for command in COMMANDS}
    assert {"README.md", "docs/scaling.md", "services/api/README.md"} <= files
    assert len([c for c in COMMANDS if not c.inline]) >= 40


def test_every_known_broken_entry_names_a_command():
    """An entry whose command is gone (fixed in place is a strict xfail's XPASS) is only noted:
    README owners fix their files while this list is edited elsewhere."""
    stale = [
        (file, start)
        for file, start, _ in KNOWN_BROKEN
        if not any(c.file == file and c.text.startswith(start) for c in COMMANDS)
    ]
    if stale:
        pytest.skip(f"KNOWN_BROKEN entries whose command is gone, to remove: {stale}")


def test_extraction_joins_continuations_and_reads_placeholders(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "```bash\nnlprec-distill tag --model <dir> \\\n  --input a [--engine ray]  # c\n```\n"
        "```console\n$ nlprec list\ncore-demo  a description\n```\n```python\nprint(1)\n```\n"
    )
    with mock.patch(f"{__name__}.REPO", tmp_path):
        command, prompted = block_commands(doc)
    assert (prompted.line, prompted.text) == (6, "nlprec list")
    assert command.line == 2 and simple_commands(command.text) == [
        ["nlprec-distill", "tag", "--model", PLACEHOLDER, "--input", "a", "--engine", "ray"]
    ]
    assert simple_commands("A=1 nlprec list && nlprec cache ls | prune") == [
        ["A=1", "nlprec", "list"], ["nlprec", "cache", "ls"], ["prune"]
    ]  # fmt: skip


WRONG_COMMANDS = [
    "nlprec-ranking search --modle engine/ --input q.jsonl --output run.trec",  # misspelt flag
    "nlprec-rankng search --model engine/ --input q.jsonl --output run.trec",  # misspelt command
    "nlprec run pipelines/core-dem.yaml",  # misspelt pipeline
    "nlprec run pipelines/core-demo.yaml --set params.nn=3",  # unknown parameter
    "nlprec run pipelines/core-demo.yaml --set steps.bow.with.epochs=two",  # wrong type
    "nlprec run pipelines/core-demo.yaml --force trian",  # no such step
    "make pipline-core-demo",  # misspelt target
    'make pipeline-core-demo ARGS="--set params.nn=3"',  # what the target runs is checked
    "nlprec cache ls | prune",  # `a | b` read as a pipe
    "python benchmarks/no_such_benchmark.py",
    "python benchmarks/core_cache.py --no-such-flag",
    "python -m nlprec.sessionrec batch --model m --input e.csv --outptu r.jsonl",
    "torchrun --standalone --nproc-per-node 2 -m nlprec.core.launch nlprec.core.nothing:worker --out o",
    "mlflow server --hots 127.0.0.1",
    "nlprec-ranking search --model models:/ranking-scifact@champion --input q --output o",
    "curl -s localhost:8000/v1/serch -H 'content-type: application/json' -d '{\"query\": \"x\"}'",
    "curl -s localhost:8000/v1/search -H 'content-type: application/json' -d '{\"qery\": \"x\"}'",
    "pip install no-such-package-anywhere",
    "curl -s localhost:8000/v1/search -d '{query: x}'",  # not JSON
]
WRONG_YAML_BLOCKS = [
    "name: core-demo\nseed: 0\nsteps:\n  - {name: generate, uses: nlprec.core.demo:generate}\n",
    "- {name: rerank, uses: nlprec.ranking.steps:no_such_step}\n",
    "search: {space: {lr: [0.1]}, metric: m, method: random}\n",
    "report: {metrics: []}\n",
    "# service.yaml\nworkers: 2\nread_only: false\nno_such_key: 1\n",
    "something: else\n",
]


@pytest.mark.parametrize(
    ("check", "text"),
    [(check_command, text) for text in WRONG_COMMANDS]
    + [(check_yaml_block, text) for text in WRONG_YAML_BLOCKS],
)
def test_a_wrong_command_or_block_is_caught(check, text, tmp_path):
    with pytest.raises(Broken):
        check(text, tmp_path)


def test_a_slow_help_is_caught():
    busy = [
        sys.executable,
        "-c",
        "import time; end = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
        "--",
    ]
    with mock.patch(f"{__name__}.HELP_SECONDS", 0.2), pytest.raises(Broken, match="took"):
        check_help_is_quick(busy)
    _help_seconds.pop(tuple(busy))
