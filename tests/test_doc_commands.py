"""Every command that README.md and docs/*.md tell users to run parses with the current code.

Taken from the shell code blocks and inline code of every page (continuations joined, prompts,
comments and environment prefixes dropped, the page's variables expanded, placeholders such as DIR
or ``<x>`` given dummy values) and checked without doing the work: ``visualmixer ...`` with its own
parser, then the checks its command makes before the work (replaced by a stop); ``python
benchmarks|scripts/X.py ...`` with the parser the script builds (caught at ``parse_args``); ``bash
scripts/X.sh ...`` against the script's groups; environment variables against what reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import io
import itertools
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL_LANGS = {"", "bash", "sh", "shell"}
PROMPT_LANGS = {"text", "console"}
#: Placeholders the pages write for values, and a dummy value of the right kind.
PLACEHOLDERS = {"SRC": "src-dir", "DST": "dst-dir", "RESTORED": "restored-dir", "DIR": "some-dir", "OUT": "out/x",
                "PATH": "some/path", "FILE": "some-file", "KEY": "k.key", "KEYFILE": "k.key", "M": "m.jsonl",
                "IMAGE": "img.png", "ROOT": "some-root", "S": "0.5", "N": "2", "K": "4", "W": "1", "T": "4",
                "TAU": "0.5", "X": "0.5", "SEED": "0", "E": "2", "R": "4", "P": "iid"}
#: A placeholder's value after these flags.
FLAG_VALUES = {"--seeds": "0", "--seed": "0", "--partition": "iid", "--mode": "offline", "--target-vfe": "0.5",
               "--groups": "random"}
#: Environment variables of the process, not of one script.
GENERIC_ENV = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED",
               "PYTHONWARNINGS", "TORCH_LOGS", "HF_HUB_OFFLINE"}
WRAPPERS = {"nice", "time", "env", "nohup", "exec", "do", "then", "else", "{", "(", "!"}
#: Commands whose options are `visualmixer train`'s after a `--`.
TRAIN_AFTER_DASHES = {"scripts/online_variants.py"}


@dataclasses.dataclass
class Command:
    page: str
    line: int
    text: str  # the logical line, as written
    program: str  # "visualmixer", "-m MODULE" or a path relative to the repository
    argv: list[str]
    env: dict[str, str]
    partial: bool  # inline mention or elided with "...": required options may be left out

    def where(self) -> str:
        return f"{self.page}:{self.line}: {self.text.strip()}"


#: An argparse message that an inline mention or an elided command may cause (values left out).
INCOMPLETE = re.compile(r"arguments are required|expected (one|at least one) argument")


def split_page(text: str) -> tuple[list[tuple[int, list[str]]], str]:
    """The code blocks with commands (first line number, lines) and the prose (blocks blanked)."""
    blocks, prose, fence, lang, start, body = [], [], None, "", 0, []
    for i, line in enumerate(text.split("\n"), 1):
        m, blank = FENCE.match(line), fence is not None or FENCE.match(line) is not None
        if fence is None and m:
            fence, lang, start, body = m.group(1)[0], m.group(2).lower(), i + 1, []
        elif fence is not None and len(line.strip()) >= 3 and not line.strip().strip(fence):
            if lang in SHELL_LANGS | PROMPT_LANGS:  # (in text blocks only the lines after a "$ " prompt)
                blocks.append((start, [b if lang in SHELL_LANGS or b.lstrip().startswith("$ ") else "" for b in body]))
            fence = None
        elif fence is not None:
            body.append(line)
        prose.append("" if blank else line)
    return blocks, "\n".join(prose)


def logical_lines(lines: list[str], first: int):
    """(line number, line) with backslash continuations joined."""
    buf, start = "", first
    for i, line in enumerate([*lines, ""], first):
        start = start if buf else i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
        elif buf or line:
            yield start, buf + line
            buf = ""


def _scan(line: str):
    """(index, char, quoted) over ``line``, where quoted is True inside quotes, ``${...}`` or ``$(...)``."""
    quote, depth = None, 0
    for i, c in enumerate(line):
        was = bool(quote or depth)
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif line.startswith(("${", "$("), i):
            depth += 1
        elif c in "})" and depth:
            depth -= 1
        yield i, c, was or bool(quote or depth)


def statements(line: str) -> list[str]:
    """The simple commands of a shell line: comments dropped, split on ; && || & and pipes
    (``a|b`` without spaces is a choice of values, not a pipe)."""
    parts, cur, skip = [], [], 0
    for i, c, quoted in _scan(line):
        if skip:
            skip -= 1
            continue
        if not quoted and c == "#" and (i == 0 or line[i - 1].isspace()):
            break
        if not quoted and (c == ";" or line.startswith(("&&", "||"), i) or (c == "|" and line[i - 1:i] == " ")
                           or (c == "&" and line[i - 1:i] not in (">", "<") and line[i + 1:i + 2] != ">")):
            parts.append("".join(cur))
            cur, skip = [], 1 if line.startswith(("&&", "||"), i) else 0
            continue
        cur.append(c)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


VAR = re.compile(r"\$\{(\w+)(?:([#%/])([^}]*))?\}|\$(\w+)")


def expand(text: str, env: dict[str, str]) -> str:
    """``$NAME``, ``${NAME}``, ``${NAME#prefix}``, ``${NAME%suffix}``, ``${NAME/old/new}`` from ``env``;
    an unknown one is left out as a word of its own, else ``0`` (``out-r$r``); ``$(...)`` is left out."""
    text = re.sub(r"\$\([^()]*\)", "", text)

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        alone = m.string[m.start() - 1:m.start()] in ("", " ", '"') and m.string[m.end():m.end() + 1] in ("", " ", '"')
        value = env.get(name, "" if alone else "0")
        if m.group(2) == "#":
            value = value.removeprefix(m.group(3))
        elif m.group(2) == "%":
            value = value.removesuffix(m.group(3))
        elif m.group(2) == "/":
            value = value.replace(*m.group(3).split("/", 1), 1)
        return value

    return VAR.sub(sub, text)


def _words(statement: str, env: dict[str, str]) -> list[str] | None:
    """The words of a simple command, redirections (``> FILE``, ``2>&1``) left out."""
    try:
        words = shlex.split(expand(statement, env))
    except ValueError:  # unbalanced quotes (a fragment)
        return None
    out, skip = [], False
    for word in words:
        redirect = re.fullmatch(r"(\d?(?:>>?|<)|&>)(.*)", word)
        if not skip and not redirect:
            out.append(word)
        skip = bool(redirect) and not redirect.group(2)  # (the file is the next word)
    return out


def commands_in(page: str, line: int, text: str, env: dict[str, str], partial: bool) -> list[Command]:
    """The commands of one logical line; assignments update ``env`` (one per page, as a reader types it)."""
    found = []
    for stmt in statements(text):
        words, cmd_env = _words(stmt, env) or [], {}
        while words and (words[0] in WRAPPERS or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
            if words[0] in WRAPPERS:
                words = words[3:] if words[:2] == ["nice", "-n"] else words[1:]
            else:
                name, _, value = words.pop(0).partition("=")
                cmd_env[name] = value
        if not words:
            env.update(cmd_env)
            continue
        if words[0] == "for" and len(words) > 3 and words[2] == "in":
            env[words[1]] = words[3]  # the loop's first value
            continue
        program, argv = identify(words)
        if program and not (argv and argv[0].endswith(":")):  # (not a quoted message "visualmixer x: error")
            found.append(Command(page, line, text, program, argv, cmd_env, partial))
    return found


def identify(words: list[str]) -> tuple[str | None, list[str]]:
    """(program, its arguments) of a command the pages document, else (None, [])."""
    head, rest = words[0], words[1:]
    if Path(head).name in ("visualmixer", "pytest"):
        return Path(head).name, rest
    if re.fullmatch(r"(.*/)?python3?", head):
        if rest[:2] == ["-m", "pytest"]:
            return "pytest", rest[2:]
        if rest[:2] == ["-m", "visualmixer"]:
            return "visualmixer", rest[2:]
        if rest[:1] == ["-m"] and len(rest) > 1 and rest[1].startswith("visualmixer."):
            return f"-m {rest[1]}", rest[2:]
        if rest and re.fullmatch(r"(benchmarks|scripts)/[\w-]+\.py", rest[0]):
            return rest[0], rest[1:]
    if head in ("bash", "sh") and rest and rest[0].startswith("scripts/"):
        return rest[0], rest[1:]
    return None, []


def doc_commands(page: Path) -> list[Command]:
    """Every documented command of ``page``, from its shell code blocks, then its inline code."""
    text = page.read_text()
    blocks, prose = split_page(text)
    env: dict[str, str] = {}
    found = []
    for first, lines in blocks:
        for line, logical in logical_lines(lines, first):
            logical = re.sub(r"^\s*\$ ", "", logical)
            found += commands_in(page.name, line, logical, env, partial="..." in logical)
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        snippet = " ".join(m.group(1).split())
        if re.search(r"(^|[\s;&|(])(\S*/)?(visualmixer|python3?|bash|pytest) ", snippet + " "):
            line = prose.count("\n", 0, m.start()) + 1
            found += commands_in(page.name, line, snippet, dict(env), partial=True)
    return found


def variants(argv: list[str]) -> list[list[str]]:
    """``argv`` with placeholders replaced, optional ``[...]`` parts kept and each ``a|b`` choice
    taken in turn."""
    out: list[list[str]] = []
    for word in argv:
        word = word.strip("[]") if re.fullmatch(r"\[?[^\[\]]*\]?", word) else word
        if not word or word in ("...", "…"):
            continue
        if word in PLACEHOLDERS:
            flag = out[-1][0] if out else ""
            word = FLAG_VALUES.get(flag, PLACEHOLDERS[word])
        word = re.sub(r"<[^<>]*>", "x", word)
        choices = word.split("|") if "|" in word and not word.startswith("-") else [word]
        out.append(choices)
    return [list(v) for v in itertools.product(*out)]


class _Reached(Exception):
    """The command got past its checks to the work, which the test does not do."""


class _Captured(Exception):  # a script's parser, caught at its parse_args
    pass


_PARSE_ARGS = argparse.ArgumentParser.parse_args


def _stop(*args, **kwargs):
    raise _Reached


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """(namespace, "") or (None, argparse's message)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return _PARSE_ARGS(parser, argv), ""
        except SystemExit as exc:
            if not exc.code:  # --help
                return None, ""
            lines = err.getvalue().strip().splitlines()
            return None, lines[-1] if lines else f"exit {exc.code}"


@functools.cache
def cli_parser(command: str) -> argparse.ArgumentParser:
    from visualmixer.cli import COMMANDS, build_parser

    return build_parser(only=command if command in COMMANDS else None)


@pytest.fixture()
def no_work(monkeypatch):
    """Every command stops where its work would start; any CUDA device asked for is "present"."""
    import torch

    from visualmixer.fl import deploy, task

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    for target in ("visualmixer.train.loop.train", "visualmixer.train.distill.run_distill",
                   "visualmixer.eval.report.files.prepare_out_dir", "visualmixer.data.filesets.load_image_folder",
                   "visualmixer.tools.folders.obfuscate_folder", "visualmixer.tools.folders.restore_folder"):
        monkeypatch.setattr(target, _stop)
    monkeypatch.setattr("visualmixer.cli._common.load_key", lambda path: None)
    monkeypatch.setattr(deploy, "require_flwr", lambda: None)
    checked = task.FLConfig.from_run_config
    monkeypatch.setattr(task.FLConfig, "from_run_config", lambda config: (checked(config), _stop()))


#: Commands whose checks run before their work (the others are only parsed: they write or read files).
VALIDATED = {"train", "distill", "audit", "recommend", "fl", "soft-labels", "obfuscate", "restore"}


def validate(command: str, args: argparse.Namespace) -> str:
    """The command's own checks, up to its work (``no_work``); "" when they pass, else the message."""
    from visualmixer.cli._common import flags_for
    from visualmixer.data.datasets import DATASET_NAMES

    if command not in VALIDATED:
        return ""
    if command == "train" and args.data not in DATASET_NAMES and not args.data.startswith("imagefolder:"):
        return f"--data {args.data}: not one of {', '.join(DATASET_NAMES)}"
    for name in ("train_results", "key_dir"):  # (folders of earlier results, checked to exist)
        if getattr(args, name, None):
            setattr(args, name, None)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = args.func(args)
        except _Reached:
            return ""
        except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
            return flags_for(str(exc), command)
    return f"stopped before its work (exit {code}): {(err.getvalue() + out.getvalue()).strip()[-300:]}"


def check_cli(argv: list[str], partial: bool) -> str:
    if not argv:
        return ""
    args, message = parse(cli_parser(argv[0]), argv)
    if message:
        return "" if partial and INCOMPLETE.search(message) else message
    return "" if args is None or partial else validate(argv[0], args)


@contextlib.contextmanager
def restoring_modules():
    """Put back what a script's ``__main__`` part changed in the package's modules (wrappers of
    ``visualmixer train`` register models and replace functions before they parse)."""
    mods = {n: m for n, m in list(sys.modules.items()) if n.startswith("visualmixer") and m is not None}
    saved = {n: dict(vars(m)) for n, m in mods.items()}
    tables = [(v, dict(v)) for d in saved.values() for k, v in d.items() if type(v) is dict and k[:2] != "__"]
    argv = sys.argv
    try:
        yield
    finally:
        sys.argv = argv
        for n, m in mods.items():
            for k in set(vars(m)) - set(saved[n]):
                if sys.modules.get(f"{n}.{k}") is not vars(m)[k]:  # (a submodule imported meanwhile stays
                    delattr(m, k)  # on its package, as Python left it: it stays in sys.modules too)
            vars(m).update(saved[n])
        for table, copy in tables:
            table.clear()
            table.update(copy)


def test_restoring_modules_keeps_a_submodule_imported_meanwhile(monkeypatch):
    """A script's imports stay in sys.modules, so their packages must keep them as attributes too:
    without, ``visualmixer.train.workerfeed``-style lookups (string patch targets) failed in the
    tests that ran later in the same process."""
    import visualmixer.eval as parent

    name = "visualmixer.eval.usersplit"
    monkeypatch.delitem(sys.modules, name, raising=False)  # (put back after the test, as was)
    monkeypatch.delattr(parent, "usersplit", raising=False)
    with restoring_modules():
        importlib.import_module(name)
    assert getattr(parent, "usersplit", None) is sys.modules[name]


def script_parser(path: Path, argv: list[str]) -> argparse.ArgumentParser:
    """The parser ``path`` builds when run with ``argv`` (run up to its ``parse_args``)."""

    def capture(parser, args=None, namespace=None):
        raise _Captured(parser)

    sys.argv = [str(path), *argv]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", capture)
        mp.syspath_prepend(str(path.parent))  # (as python puts the script's folder first)
        try:
            runpy.run_path(str(path), run_name="__main__")
        except _Captured as got:
            return got.args[0]
    raise AssertionError(f"{path.name} did not parse its arguments")


def _mix_audit_specs(args: argparse.Namespace) -> str:
    """scripts/mix_audit.py checks its method specs and attacks only when each audit starts."""
    from visualmixer.eval.attacks import attack_names
    from visualmixer.eval.methods import parse_method

    unknown = [a for a in args.attacks if a.upper() not in attack_names()]
    if unknown:
        return f"--attacks: unknown {', '.join(unknown)}"
    for spec in args.specs:
        try:
            parse_method(spec)
        except ValueError as exc:
            return f"--specs {spec}: {exc}"
    return ""


#: Scripts whose values are checked after parsing: the same checks, without the work.
SCRIPT_CHECKS = {"scripts/mix_audit.py": _mix_audit_specs}


def check_script(cmd: Command, argv: list[str]) -> str:
    """A documented ``python benchmarks|scripts/X.py`` or ``bash scripts/X.sh`` command."""
    path = ROOT / cmd.program
    if not path.is_file():
        return f"no file {cmd.program}"
    text = path.read_text()
    unread = [name for name in cmd.env if name not in GENERIC_ENV and name not in text]
    if unread:
        return f"{cmd.program} reads no environment variable {', '.join(unread)}"
    if path.suffix == ".sh":
        groups = [w for w in argv if not re.fullmatch(r"-?\d+|-.*", w)]
        unknown = [w for w in groups if not re.search(rf"(^|[\s|(]){re.escape(w)}[|)]", text, re.M)]
        return f"{cmd.program} has no group {', '.join(unknown)}" if unknown else ""
    wraps = "from visualmixer.cli import main" in text
    if "argparse" not in text and not wraps:  # arguments read by hand: the flags must be in the file
        missing = [w for w in argv if w.startswith("--") and w not in text]
        return f"{cmd.program} takes no {', '.join(missing)}" if missing else ""
    train_argv = None
    if cmd.program in TRAIN_AFTER_DASHES and "--" in argv:
        argv, train_argv = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    with restoring_modules():
        args, message = parse(script_parser(path, argv), argv)
        if not message and args is not None and not cmd.partial:
            message = validate(argv[0], args) if wraps else SCRIPT_CHECKS.get(cmd.program, lambda a: "")(args)
    if not message and train_argv is not None:
        message = check_cli(["train", *train_argv], cmd.partial)
    return "" if cmd.partial and INCOMPLETE.search(message) else message


def check_module(cmd: Command) -> str:
    """``python -m visualmixer.X``: X exists and runs as a program."""
    spec = importlib.util.find_spec(cmd.program.split()[1])
    runnable = spec is not None and spec.origin is not None and "__main__" in Path(spec.origin).read_text()
    return "" if runnable else f"python {cmd.program}: no such runnable module"


def check_tests(argv: list[str]) -> str:
    """``pytest tests/X.py``: the test files named are there."""
    return " ".join(f"no {w}" for w in argv if w.startswith("tests/") and not (ROOT / w.split("::")[0]).exists())


@functools.cache
def package_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "src" / "visualmixer").rglob("*.py"))


def check(cmd: Command) -> list[str]:
    """The problems of one documented command (each variant of its placeholders and choices)."""
    unread = [name for name in cmd.env if name not in GENERIC_ENV and name not in package_text()]
    problems = [f"{cmd.where()}\n    -> the package reads no environment variable {', '.join(unread)}"] if (
        unread and cmd.program == "visualmixer") else []
    for argv in variants(cmd.argv):
        message = (check_cli(argv, cmd.partial) if cmd.program == "visualmixer" else check_module(cmd)
                   if cmd.program.startswith("-m ") else check_tests(argv) if cmd.program == "pytest"
                   else check_script(cmd, argv))
        if message:
            problems.append(f"{cmd.where()}\n    -> {message}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_documented_commands_parse(page, no_work):
    problems = [p for cmd in doc_commands(page) for p in dict.fromkeys(check(cmd))]
    assert not problems, f"{len(problems)} stale command(s) in {page.name}:\n" + "\n".join(problems)


def test_the_commands_are_found():
    """The extraction keeps up with the pages: each kind of command is found."""
    found = [cmd for page in PAGES for cmd in doc_commands(page)]
    assert {"visualmixer", "benchmarks", "scripts", "pytest"} <= {cmd.program.split("/")[0] for cmd in found}
    assert len([c for c in found if c.program == "visualmixer" and not c.partial]) > 100
    assert any(c.program.endswith(".sh") for c in found)


STALE_PAGE = """\
```bash
T="visualmixer train --data fashion-mnist --epochs 1"
$ OMP_NUM_THREADS=1 nice -n 5 $T --target-vfe 0.5 \\
    --out out/t --optimiser adam
VISUALMIXER_NO_SUCH=1 visualmixer train --out out/e
for S in 0 1; do .venv/bin/visualmixer train --seeds $S --prefetch 2 --out out/s$S; done
python benchmarks/bench_core.py --quick --no-such-flag
OUT=out/x bash scripts/train_experiments.sh fm-grid no-such-group
visualmixer train --data fashion-mnist --mix 4 --groups similar --out out/ok > log.txt 2>&1   # fine
```
Inline: `visualmixer obfuscate SRC DST --key KEY --target-vfe 2` and `visualmixer audit --methods pixelate:4 ...`.
"""


def test_stale_commands_are_reported(tmp_path, no_work):
    page = tmp_path / "page.md"
    page.write_text(STALE_PAGE)
    cmds = doc_commands(page)
    assert [(c.line, c.program) for c in cmds] == [
        (3, "visualmixer"), (5, "visualmixer"), (6, "visualmixer"), (7, "benchmarks/bench_core.py"),
        (8, "scripts/train_experiments.sh"), (9, "visualmixer"), (11, "visualmixer"), (11, "visualmixer")]
    problems = {c.line: "".join(check(c)) for c in cmds}
    assert "unrecognized arguments: --optimiser adam" in problems[3]
    assert "reads no environment variable VISUALMIXER_NO_SUCH" in problems[5]
    assert "--prefetch 2" in problems[6] and "mode" in problems[6]  # the command's own check, after parsing
    assert "--no-such-flag" in problems[7]
    assert "no group no-such-group" in problems[8]
    assert not problems[9]
    assert "--target-vfe" in "".join(check(cmds[6])) and not check(cmds[7])
