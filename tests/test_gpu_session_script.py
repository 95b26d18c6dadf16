"""scripts/gpu_session.sh, the one command a lent GPU machine runs, is not stale: checked on the CPU.

A GPU session is short and rare; a line of the script that the code has moved away from (a renamed
function, a removed flag, a test file or ``-k`` expression that selects nothing) wastes it. Without
running any of the work, the script is walked as bash would walk it (its variables and defaults
expanded, each ``for`` loop taken with every value, the lines its loops ``echo`` into a file fed to
the function ``xargs`` calls) and

1. its Python (each ``<<'PYEOF'`` heredoc and ``$PY -c "..."``) compiles, its imports of the package
   resolve, and what it uses of the package exists and takes the arguments given
   (``vm.obfuscate(x, key=...)``, ``triton_switch.set_enabled``, ``result.plans.levels``);
2. every ``visualmixer ...`` and ``python benchmarks|scripts/X.py ...`` command parses and passes the
   command's own checks (tests/test_doc_commands.py's machinery; CUDA is faked as present);
3. the test files it names exist, and its ``-k`` expression selects tests in each of them
   (``pytest --collect-only``: the CUDA tests are collected here, skipped when run);
4. what it reads is in the repository, or written by the script first.

``GPU_SESSION_SCRIPT=/path/to/copy.sh pytest tests/test_gpu_session_script.py`` checks another copy.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import functools
import importlib
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import test_doc_commands as docs

ROOT = docs.ROOT
SCRIPT = Path(os.environ.get("GPU_SESSION_SCRIPT", ROOT / "scripts" / "gpu_session.sh"))
no_work = docs.no_work  # (the fixture: commands stop before their work, CUDA is "present")

HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
PYTHON = re.compile(r"(.*/)?python3?(\.\d+)?")
WRAPPERS = {"if", "then", "do", "else", "elif", "while", "until", "!", "{", "(", "exec", "nohup", "time", "env"}
#: Options that write the path after them (the others that name a path read it).
WRITE_FLAGS = {"--out", "--json"}
PATH_WORD = re.compile(r"[\w.][\w.@+,=:-]*(?:/[\w.@+,=:-]*)+")


@dataclasses.dataclass
class Snippet:
    where: str
    code: str


@dataclasses.dataclass
class Session:
    """What walking the script found."""

    name: str
    commands: list = dataclasses.field(default_factory=list)  # docs.Command
    python: list[Snippet] = dataclasses.field(default_factory=list)
    pytest_runs: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)  # (where, argv)
    reads: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> where
    writes: set[str] = dataclasses.field(default_factory=set)
    optional: set[str] = dataclasses.field(default_factory=set)  # tested with [[ -d/-f/-e ]] before use
    files: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # lines echoed into a file
    functions: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)
    python_lines: set[int] = dataclasses.field(default_factory=set)  # lines that ran python, as found
    problems: list[str] = dataclasses.field(default_factory=list)


# --- bash, as far as the script uses it -------------------------------------------------------------


def _closing(text: str, i: int) -> int:
    """The index of the ``)`` that closes the ``(`` at ``i``."""
    depth, quote = 0, None
    for j in range(i, len(text)):
        c = text[j]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if not depth:
                return j
    return len(text) - 1


def _trim(value: str, op: str, pattern: str) -> str:
    """``${v#p}``, ``${v##p}``, ``${v%p}``, ``${v%%p}`` with bash's glob patterns."""
    cuts = range(len(value) + 1)
    if op in ("#", "##"):
        for i in reversed(cuts) if op == "##" else cuts:
            if fnmatch.fnmatchcase(value[:i], pattern):
                return value[i:]
    else:
        for i in cuts if op == "%%" else reversed(cuts):
            if fnmatch.fnmatchcase(value[i:], pattern):
                return value[:i]
    return value


def _dollar(text: str, i: int, env: dict[str, str], args: list[str]) -> tuple[str, int]:
    """The value of the expansion at ``text[i] == "$"`` and the index after it."""
    if text.startswith("$((", i):
        return "0", _closing(text, i + 1) + 1
    if text.startswith("$(", i):
        end = _closing(text, i + 1)
        try:
            inner = shlex.split(expand(text[i + 2:end], env, args))
        except ValueError:
            inner = []
        if inner[:1] == ["seq"] and all(w.isdigit() for w in inner[1:3]) and len(inner) == 3:
            return " ".join(str(k) for k in range(int(inner[1]), int(inner[2]) + 1)), end + 1
        return "", end + 1  # (another command's output: unknown here)
    if text.startswith("${", i):
        end = text.index("}", i)
        m = re.fullmatch(r"(\w+|@)(?:(:-|:=|##|#|%%|%)(.*))?", text[i + 2:end], re.S)
        if not m:
            return "", end + 1
        value = " ".join(args) if m.group(1) == "@" else env.get(m.group(1), "")
        if m.group(2) in (":-", ":="):
            value = value or expand(m.group(3), env, args)
        elif m.group(2):
            value = _trim(value, m.group(2), m.group(3))
        return value, end + 1
    m = re.match(r"\$(\w+|[@?!#$*-])", text[i:])
    if not m:
        return "$", i + 1
    name = m.group(1)
    if name[0].isdigit() and len(name) > 1:  # ($10 is ${1}0)
        name, m_end = name[0], i + 2
    else:
        m_end = i + m.end()
    if name.isdigit():
        return (args[int(name) - 1] if 0 < int(name) <= len(args) else ""), m_end
    if name in "@*":
        return " ".join(args), m_end
    return ("0" if name in "?!#$-" else env.get(name, "")), m_end


def expand(text: str, env: dict[str, str], args: list[str] = ()) -> str:
    """``text`` with bash's expansions done outside single quotes: ``$X``, ``${X:-default}``,
    ``${X#glob}`` and kin, ``"$@"`` (each argument a word), ``$(seq A B)``; other command
    substitutions and arithmetic give "" and "0" (unknown here)."""
    out, i, quote = [], 0, None
    while i < len(text):
        c = text[i]
        if quote == "'":
            quote = None if c == "'" else quote
        elif c == "'" and not quote:
            quote = "'"
        elif c == '"' and not quote and text.startswith('"$@"', i):
            out.append(shlex.join(args))
            i += 4
            continue
        elif c == '"':
            quote = None if quote else '"'
        elif c == "\\" and i + 1 < len(text):
            out.append(text[i:i + 2])
            i += 2
            continue
        elif c == "$":
            value, i = _dollar(text, i, env, list(args))
            out.append(value)
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _blocks(lines: list[tuple[int, str]], i: int, opens, closes) -> int:
    """The index of the line that closes the block opened at line ``i``."""
    depth = 0
    for j in range(i, len(lines)):
        text = lines[j][1].strip()
        depth += bool(opens(text)) - bool(closes(text) and j > i)
        if depth <= 0:
            return j
    raise ValueError(f"line {lines[i][0]}: block not closed")


def _is_loop(text: str) -> bool:
    return bool(re.match(r"(for|while|until)\s", text))


def _is_done(text: str) -> bool:
    return bool(re.match(r"done\b", text))


class Walker:
    """Walks the script's logical lines (heredoc bodies left out), as bash runs them, but every branch
    of every ``if`` and every value of every ``for``: commands are recorded, not run."""

    def __init__(self, session: Session, heredoc_lines: set[int]):
        self.s, self.heredoc_lines = session, heredoc_lines

    def where(self, line: int) -> str:
        return f"{self.s.name}:{line}"

    def walk(self, lines: list[tuple[int, str]], env: dict[str, str], args: list[str], sink: str | None = None):
        i = 0
        while i < len(lines):
            n, text = lines[i]
            stripped = text.strip()
            func = re.match(r"(\w[\w-]*)\s*\(\)\s*\{(.*)$", stripped)
            if func:
                body = func.group(2).split("#")[0].strip()
                if body.endswith("}"):  # one line: name() { ...; }
                    self.s.functions[func.group(1)] = [(n, body[:-1])]
                else:
                    end = _blocks(lines, i, lambda t: t.endswith("{") or re.search(r"\{\s*(#.*)?$", t),
                                  lambda t: t == "}")
                    self.s.functions[func.group(1)] = lines[i + 1:end]
                    i = end
                i += 1
                continue
            loop = re.match(r"for\s+(\w+)\s+in\s+(.*?)\s*;\s*do\b(.*)$", stripped)
            if loop:
                end = _blocks(lines, i, _is_loop, _is_done)
                body = ([(n, loop.group(3))] if loop.group(3).strip() else []) + lines[i + 1:end]
                out = self.redirect_of(lines[end][1], env, args) or sink
                if out:
                    self.s.writes.add(out)
                    self.s.files.setdefault(out, [])
                values = shlex.split(expand(loop.group(2), env, args)) or ["0"]  # (empty: the body once)
                for value in values:
                    self.walk(body, {**env, loop.group(1): value}, list(args), out)
                i = end + 1
                continue
            if re.match(r"(for|while|until)\s", stripped):  # (a form the walk does not take: say so)
                self.s.problems.append(f"{self.where(n)}: loop not understood by the test: {stripped}")
            for stmt in docs.statements(text):
                self.statement(n, stmt, env, args, sink)
            i += 1

    def redirect_of(self, text: str, env, args) -> str | None:
        """Where ``done > FILE`` sends its loop's output."""
        m = re.match(r"done\s*>>?\s*(\S+)", text.strip())
        return shlex.split(expand(m.group(1), env, args))[0] if m else None

    def statement(self, n: int, stmt: str, env: dict[str, str], args: list[str], sink: str | None):
        for inner in re.findall(r"[<>]\(([^()]*)\)", stmt):  # process substitution: >(tee -a "$LOG")
            self.statement(n, inner, env, args, sink)
        stmt = HEREDOC.sub("", re.sub(r"[<>]\([^()]*\)", "", stmt))
        try:
            words = shlex.split(expand(stmt, env, args))
        except ValueError as exc:
            self.s.problems.append(f"{self.where(n)}: cannot split {stmt!r}: {exc}")
            return
        kept, skip, stdin = [], None, None
        if "((" in words[:2]:  # arithmetic: if (( left < 15 ))
            return
        for word in words:  # redirections
            if skip:
                (self.s.writes.add(word) if skip == ">" else self.s.reads.setdefault(word, self.where(n)))
                stdin = word if skip == "<" else stdin
                skip = None
                continue
            m = re.fullmatch(r"(\d?>>?|&>>?|<)(.*)", word)
            if not m:
                kept.append(word)
            elif not m.group(2):
                skip = "<" if m.group(1) == "<" else ">"
            elif not m.group(2).startswith("&"):
                (self.s.writes.add(m.group(2)) if ">" in m.group(1) else self.s.reads.setdefault(m.group(2),
                                                                                             self.where(n)))
        words = kept
        if {"[[", "]]", "[", "]", "test"} & set(words):  # a test (&& splits one in parts): -d/-f/-e PATH
            self.s.optional.update(w for k, w in enumerate(words[1:], 1) if words[k - 1] in ("-d", "-f", "-e"))
            return
        cmd_env: dict[str, str] = {}
        while words:
            if words[0] in WRAPPERS:
                words = words[1:]
            elif words[0] == "timeout":
                words = words[1:]
                while words and words[0].startswith("-"):
                    words = words[2:] if words[0] in ("-s", "-k", "--signal", "--kill-after") else words[1:]
                words = words[1:]  # (the duration)
            elif words[0] in ("export", "local", "declare", "readonly") and all(
                    "=" in w or not w.startswith("-") for w in words[1:]):
                env.update(w.split("=", 1) for w in words[1:] if "=" in w)
                return
            elif re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                name, _, value = words.pop(0).partition("=")
                cmd_env[name] = value
            else:
                break
        if not words:
            env.update(cmd_env)
            return
        head = words[0]
        if head == "shift":
            del args[:1]
        elif head == "echo":
            if sink:
                self.s.files[sink].append(" ".join(words[1:]))
        elif head == "xargs":
            call = shlex.split(words[words.index("-c") + 1])[0] if "-c" in words else words[-1]
            if call not in self.s.functions:
                self.s.problems.append(f"{self.where(n)}: xargs calls {call}, which the script does not define")
            for line in self.s.files.get(stdin, []):
                self.walk(self.s.functions.get(call, []), dict(env), shlex.split(line))
        elif PYTHON.fullmatch(head):
            self.python(n, stmt, words, cmd_env)
        elif Path(head).name in ("visualmixer", "pytest"):
            self.command(n, stmt, words, cmd_env)
        elif head not in ("cd", "return", "exit", "stamp", "step"):
            self.paths(n, words)

    def python(self, n: int, stmt: str, words: list[str], cmd_env: dict[str, str]):
        rest = words[1:]
        while rest and (rest[0] in ("-W", "-X") or re.fullmatch(r"-[uBOIsESq]+", rest[0])):
            rest = rest[2:] if rest[0] in ("-W", "-X") else rest[1:]
        if rest[:1] == ["-c"] and len(rest) > 1:
            self.s.python.append(Snippet(f"{self.where(n)} ($PY -c)", rest[1]))
            self.s.python_lines.add(n)
        elif rest[:1] == ["-"] or not rest:
            if n in self.heredoc_lines:
                self.s.python_lines.add(n)
        else:
            self.command(n, stmt, [words[0], *rest], cmd_env)

    def command(self, n: int, stmt: str, words: list[str], cmd_env: dict[str, str]):
        program, argv = docs.identify(words)
        if program is None:
            self.s.problems.append(f"{self.where(n)}: not a command the test knows: {' '.join(words)}")
            return
        self.s.python_lines.add(n)
        if program == "pytest":
            self.s.pytest_runs.append((self.where(n), argv))
        elif program != "visualmixer":  # (a variable the package reads is read by a script that imports it)
            cmd_env = {k: v for k, v in cmd_env.items() if k not in docs.package_text()}
        text = shlex.join([*(f"{k}={v}" for k, v in cmd_env.items()), *words])  # (as run: expanded)
        self.s.commands.append(docs.Command(self.s.name, n, text, program, argv, cmd_env, partial=False))
        self.paths(n, [program, *argv])

    def paths(self, n: int, words: list[str]):
        """Paths named: read, unless written (after --out/--json, by tee, mkdir, cp's last, tar's archive)."""
        head, out = words[0], set()
        if head in ("tee", "mkdir"):
            out = {w for w in words[1:] if not w.startswith("-")}
        elif head in ("cp", "mv") and len(words) > 2:
            out = {words[-1]}
        elif head == "tar" and len(words) > 2:
            out = {words[2]}
        out |= {words[k + 1] for k, w in enumerate(words[:-1]) if w in WRITE_FLAGS}
        out |= {w.split("=", 1)[1] for w in words if w.split("=", 1)[0] in WRITE_FLAGS and "=" in w}
        self.s.writes |= out
        for w in words[1:]:
            if w not in out and PATH_WORD.fullmatch(w) and not w.startswith(("-", "/")):
                self.s.reads.setdefault(w, self.where(n))


def split_script(text: str) -> tuple[list[str], dict[int, tuple[str, str]]]:
    """The lines with heredoc bodies blanked, and the heredocs by the line that opens them:
    {line: (that line, body)}."""
    lines, heredocs, i = text.split("\n"), {}, 0
    out = []
    while i < len(lines):
        out.append(lines[i])
        m = HEREDOC.search(lines[i]) if not lines[i].lstrip().startswith("#") else None
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == m.group(2)), len(lines))
            heredocs[i + 1] = (lines[i], "\n".join(lines[i + 1:end]))
            out += [""] * (end - i)
            i = end
        i += 1
    return out, heredocs


@functools.cache
def session(path: Path) -> Session:
    text = path.read_text()
    lines, heredocs = split_script(text)
    s = Session(path.name)
    for n, (head, body) in heredocs.items():
        if PYTHON.search(head) or "$PY" in head:
            s.python.append(Snippet(f"{s.name}:{n} (heredoc)", body))
    walker = Walker(s, set(heredocs))
    logical = [(n, t) for n, t in docs.logical_lines(lines, 1) if t.strip() and not t.lstrip().startswith("#")]
    try:
        walker.walk(logical, {}, [])
    except ValueError as exc:
        s.problems.append(f"{s.name}: {exc}")
    return s


# --- 1. the script's Python --------------------------------------------------------------------------


def _ours(obj) -> bool:
    module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None) or ""
    return module.split(".")[0] == "visualmixer"


def _named_type(annotation, namespace: dict):
    """The package's class an annotation names (a string under ``from __future__ import annotations``)."""
    if isinstance(annotation, str):
        annotation = namespace.get(annotation) if annotation.isidentifier() else None
    return annotation if isinstance(annotation, type) and _ours(annotation) else None


def _fields(cls: type) -> dict:
    """The annotated attributes of the instances of ``cls`` (dataclass fields and the like)."""
    fields = {}
    for klass in reversed(cls.__mro__):
        fields.update(vars(klass).get("__annotations__", {}))
    if dataclasses.is_dataclass(cls):
        fields.update({f.name: f.type for f in dataclasses.fields(cls)})
    return fields


class Uses(ast.NodeVisitor):
    """Resolves the package's names a snippet uses: imported modules and their attributes, classes,
    and the results of its functions whose return type is one of its classes (``res.plans.levels``)."""

    def __init__(self, where: str):
        self.where, self.names, self.problems, self.memo = where, {}, [], {}

    def problem(self, node, message: str):
        self.problems.append(f"{self.where} line {getattr(node, 'lineno', '?')}: {message}")

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] != "visualmixer":
                continue  # (third-party: present on the GPU machine or not, not this package's business)
            try:
                module = importlib.import_module(alias.name)
            except ImportError as exc:
                self.problem(node, f"import {alias.name}: {exc}")
                continue
            bound = alias.asname or alias.name.split(".")[0]
            self.names[bound] = ("obj", module if alias.asname else sys.modules[bound])

    def visit_ImportFrom(self, node):
        if not node.module or node.level:
            return
        ours = node.module.split(".")[0] == "visualmixer"
        if not ours and importlib.util.find_spec(node.module.split(".")[0]) is None:
            return  # (not installed here, e.g. triton)
        try:
            module = importlib.import_module(node.module)
        except ImportError as exc:
            if ours:
                self.problem(node, f"from {node.module} import ...: {exc}")
            return
        for alias in node.names:
            if hasattr(module, alias.name):
                value = getattr(module, alias.name)
            else:
                try:
                    value = importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    self.problem(node, f"from {node.module} import {alias.name}: no such name")
                    continue
            if ours:
                self.names[alias.asname or alias.name] = ("obj", value)

    def _unbind(self, target):
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                self.names.pop(node.id, None)

    def visit_Assign(self, node):
        self.visit(node.value)
        for target in node.targets:
            self._unbind(target)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            got = self.resolve(node.value)
            if got:
                self.names[node.targets[0].id] = got

    def visit_For(self, node):
        self.visit(node.iter)
        self._unbind(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    def visit_With(self, node):
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._unbind(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Attribute(self, node):
        self.resolve(node)
        self.generic_visit(node)

    def visit_Call(self, node):
        self.resolve(node)
        self.generic_visit(node)

    def resolve(self, node):
        """("obj", value), ("inst", class) or None (not the package's, or not known here)."""
        if id(node) not in self.memo:
            self.memo[id(node)] = self._resolve(node)
        return self.memo[id(node)]

    def _resolve(self, node):
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, self.resolve(node.value))
        if isinstance(node, ast.Call):
            return self._call(node, self.resolve(node.func))
        return None

    def _attribute(self, node, base):
        if base is None:
            return None
        kind, value = base
        name = node.attr
        if kind == "obj":
            if not isinstance(value, (types.ModuleType, type)) or not _ours(value):
                return None
            if hasattr(value, name):
                return ("obj", getattr(value, name))
            if isinstance(value, type) and name in _fields(value):
                return None  # (an instance's field, asked of the class)
            if isinstance(value, types.ModuleType):
                try:
                    return ("obj", importlib.import_module(f"{value.__name__}.{name}"))
                except ImportError:
                    pass
            self.problem(node, f"{value.__name__} has no attribute {name!r}")
            return None
        cls = value  # an instance of the package's class
        namespace = vars(sys.modules[cls.__module__])
        fields = _fields(cls)
        if name in fields:
            return ("inst", t) if (t := _named_type(fields[name], namespace)) else None
        if hasattr(cls, name):
            attr = inspect.getattr_static(cls, name)
            if isinstance(attr, property) and attr.fget is not None:
                ret = _named_type(attr.fget.__annotations__.get("return"), namespace)
                return ("inst", ret) if ret else None
            return None
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            source = ""
        if "__getattr__" not in source and f"self.{name}" not in source:
            self.problem(node, f"{cls.__name__} objects have no attribute {name!r}")
        return None

    def _call(self, node, func):
        if func is None or func[0] != "obj" or not callable(func[1]) or not _ours(func[1]):
            return None
        f = func[1]
        if not any(isinstance(a, ast.Starred) for a in node.args) and all(k.arg for k in node.keywords):
            try:
                inspect.signature(f).bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords})
            except TypeError as exc:
                self.problem(node, f"{getattr(f, '__qualname__', f)}(...): {exc}")
            except ValueError:  # (no signature)
                pass
        if isinstance(f, type):
            return ("inst", f)
        target = getattr(f, "__func__", f)
        ret = _named_type(getattr(target, "__annotations__", {}).get("return"), getattr(target, "__globals__", {}))
        return ("inst", ret) if ret else None


def python_problems(snippet: Snippet) -> list[str]:
    try:
        tree = ast.parse(compile(snippet.code, snippet.where, "exec", ast.PyCF_ONLY_AST))
    except SyntaxError as exc:
        return [f"{snippet.where}: does not compile: {exc}"]
    uses = Uses(snippet.where)
    uses.visit(tree)
    return list(dict.fromkeys(uses.problems))


# --- 3. the tests it runs ----------------------------------------------------------------------------


def pytest_problems(where: str, argv: list[str]) -> list[str]:
    """The test files named exist and the run's ``-k`` selects tests in each."""
    files = [w for w in argv if w.startswith("tests/")]
    missing = [f for f in files if not (ROOT / f.split("::")[0]).is_file()]
    if missing:
        return [f"{where}: no test file {', '.join(missing)}"]
    run = [w for w in argv if not re.fullmatch(r"-q+|--quiet", w)]
    proc = subprocess.run([sys.executable, "-m", "pytest", *run, "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    if proc.returncode not in (0, 5):
        return [f"{where}: pytest {' '.join(argv)} --collect-only: exit {proc.returncode}\n"
                + (proc.stdout + proc.stderr)[-1500:]]
    selected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    empty = [f for f in files if f.split("::")[0] not in selected]
    if empty:
        k = argv[argv.index("-k") + 1] if "-k" in argv[:-1] else ""
        return [f"{where}: -k {k!r} selects no test in {', '.join(empty)}"]
    return []


# --- 4. what it reads --------------------------------------------------------------------------------


def read_problems(s: Session) -> list[str]:
    def written(path: str) -> bool:
        path = path.rstrip("/")
        return any(w.rstrip("/") == path or w.startswith(path + "/") or path.startswith(w.rstrip("/") + "/")
                   for w in s.writes)

    return [f"{where}: reads {path}, which is not in the repository and which the script does not write"
            for path, where in s.reads.items()
            if not (ROOT / path).exists() and not written(path) and path not in s.optional]


# --- the tests ---------------------------------------------------------------------------------------


def script_problems(path: Path) -> list[str]:
    """Every problem the checks find in the script at ``path`` (commands checked under ``no_work``)."""
    s = session(path)
    problems = list(s.problems)
    problems += [p for snippet in s.python for p in python_problems(snippet)]
    problems += [p for cmd in s.commands for p in docs.check(cmd)]
    problems += [p for where, argv in dict((shlex.join(a), (w, a)) for w, a in s.pytest_runs).values()
                 for p in pytest_problems(where, argv)]
    problems += read_problems(s)
    return list(dict.fromkeys(problems))


def test_the_walk_finds_every_python_run():
    """Each line that runs Python, as the script is written, gave a checked command or snippet: the walk
    keeps up with the script."""
    s = session(SCRIPT)
    lines, heredocs = split_script(SCRIPT.read_text())
    runs = {n for n, t in docs.logical_lines(lines, 1)
            if not re.match(r"\s*(#|stamp\b|echo\b|export\b|\w+=\S*$)", t)
            and re.search(r"\$\{?PY\b|(^|[\s;&|(])(\S*/)?(python3?|visualmixer|pytest)\s", t)}
    assert not s.problems
    assert runs and runs <= s.python_lines, f"lines not checked: {sorted(runs - s.python_lines)}"
    assert any(c.program == "visualmixer" for c in s.commands) and s.pytest_runs and s.python


def test_its_python_compiles_and_uses_the_package_as_it_is():
    s = session(SCRIPT)
    problems = [p for snippet in s.python for p in python_problems(snippet)]
    assert not problems, "\n".join(problems)


def test_its_commands_parse_and_pass_their_checks(no_work):
    s = session(SCRIPT)
    problems = list(dict.fromkeys(p for cmd in s.commands for p in docs.check(cmd)))
    assert not problems, f"{len(problems)} stale command(s):\n" + "\n".join(problems)


def test_its_test_runs_select_tests_in_every_file_named():
    s = session(SCRIPT)
    problems = [p for where, argv in s.pytest_runs for p in pytest_problems(where, argv)]
    assert not problems, "\n".join(problems)


def test_what_it_reads_is_there_or_written_first():
    problems = read_problems(session(SCRIPT))
    assert not problems, "\n".join(problems)


STALE = """\
set -u
export PY=${PY:-python3} RES=${RES:-out/x} DEV=${DEV:-cuda}
timeout 150 $PY -m pytest -q -p no:cacheprovider -k "cuda and no_such_test" tests/test_graphs.py \\
  tests/test_no_such_file.py 2>&1 | tail -5
timeout 150 $PY -m pytest -q -k "cuda and no_such_test" tests/test_graphs.py
$PY -W ignore - <<'PYEOF' 2>&1 | tee "$RES/check.txt"
import visualmixer as vm
from visualmixer.core import triton_switch, no_such_module
r = vm.obfuscate(x, key=None, no_such_option=1)
print(r.plans.levels, r.plans.no_such_field, triton_switch.no_such_function(), vm.Key.from_seed(1, 2))
PYEOF
$PY -c "import visualmixer as vm; vm.obfuscat(None)"
$PY - <<'PYEOF'
print(1
PYEOF
for mode in eager graphs; do
  VISUALMIXER_CUDA_GRAPHS=1 timeout 60 $PY -W ignore benchmarks/bench_core.py --quick --device "$DEV" \\
    --batches 256 --json "$RES/bench-$mode.json"
done
grep x "$RES/bench-eager.json" "$RES/never-written.txt" .devdata/no-such-data
T="--data fashion-mnist --model resnet18 --no-progress --device $DEV"
for seed in ${SEEDS:-0 1}; do
  for spec in clean:"--target-vfe none" online:"--target-vfe 0.5 --mode online --prefetch-batches 2"; do
    echo "r/${spec%%:*}-$seed $T --seeds $seed ${spec#*:}"
  done
done > "$RES/jobs.txt"
job() {
  local name=$1; shift
  timeout 10 $PY -m visualmixer train "$@" --out "$RES/$name"
}
xargs -P 2 -L 1 bash -c 'job "$@"' _ < "$RES/jobs.txt"
$PY scripts/mix_train_table.py --root "$RES/r" --prefixes r18
"""


def test_a_stale_script_is_reported(tmp_path, no_work):
    path = tmp_path / "stale.sh"
    path.write_text(STALE)
    s = session(path)
    assert {c.program for c in s.commands} == {"pytest", "benchmarks/bench_core.py", "visualmixer",
                                                 "scripts/mix_train_table.py"}
    assert [c.argv[-2:] for c in s.commands if c.program == "visualmixer"] == [
        ["--out", f"out/x/r/{spec}-{seed}"] for seed in (0, 1) for spec in ("clean", "online")]
    problems = "\n".join(script_problems(path))
    for expected in [
        "stale.sh:3: no test file tests/test_no_such_file.py",
        "stale.sh:5: -k 'cuda and no_such_test' selects no test in tests/test_graphs.py",
        "stale.sh:6 (heredoc) line 2: from visualmixer.core import no_such_module: no such name",
        "unexpected keyword argument 'no_such_option'",
        "Plans objects have no attribute 'no_such_field'",
        "visualmixer.core.triton_switch has no attribute 'no_such_function'",
        "from_seed(...): too many positional arguments",
        "stale.sh:12 ($PY -c) line 1: visualmixer has no attribute 'obfuscat'",
        "stale.sh:13 (heredoc): does not compile",
        "unrecognized arguments: --batches 256",
        "stale.sh:20: reads out/x/never-written.txt",
        "stale.sh:20: reads .devdata/no-such-data",
        "unrecognized arguments: --prefetch-batches 2",
        "unrecognized arguments: --prefixes r18",
    ]:
        assert expected in problems, f"{expected!r} not in:\n{problems}"
    assert not re.search(r"reads \S*(bench-eager.json|jobs.txt|/r\b)", problems)  # (written before)
    assert problems.count("unrecognized arguments: --prefetch-batches") == 2  # (seeds 0 and 1)
