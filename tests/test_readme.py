"""The READMEs' own commands and Python snippets, run as written on synthetic data.

``README.md``, ``experiments/README.md`` and ``notebooks/README.md`` are parsed, not copied: every command of a
```bash / ```sh / ```console block and of an indented code block (continued lines joined,
comments dropped), every ```python block, and every inline code span that starts with
``mer-keras``, ``python experiments/``, ``pip install`` or ``make``. Each one is matched
against ``RULES`` (what to do with it: run it, check a make target, an install extra or a
synopsis) and run in a work folder where the READMEs' relative paths (``cache/...``,
``runs/...``, ``my_bundle``) stay as written and the few paths no command writes
(``/data/CASME2``, ``CACHE``, ``clip.avi``, ...) are mapped by ``PATHS`` onto a synthetic
composite written by the package's own writer. Long runs are shortened only by options the
commands accept (``--quick``, ``--subjects``, ``--repeats``) or, for Python snippets, by
keyword arguments added to named calls (``SNIPPET_CALLS``).

A command no rule knows fails ``test_every_command_has_a_rule`` (new commands are never
skipped silently); a rule or a substitution no command uses fails too. A command that is
known to fail because of the code is listed in ``XFAIL`` (strict: fixing the code flips it).

Commands that run share a work folder per group (``pipeline``: synth -> prepare -> loso ->
fit-final -> predict -> export; ``bench``; ``notebooks``: the quick experiments, then
``make notebooks``) and run in the READMEs' order inside one test per group, so no scheduler
can split a group; the checks are one test each.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "experiments/README.md", "notebooks/README.md")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
PROGRAMS = ("mer-keras", "python", "make", "pip", "jupyter")
INLINE = re.compile(r"`((?:mer-keras|python experiments/|pip install|make )[^`]*)`")
QUICK_SUBJECT = "casme2/sub01"  # the one left-out subject of shortened LOSO runs (synthetic composite)
TIMEOUT = 600

# ----------------------------------------------------------------------------- what the READMEs may contain


@dataclass(frozen=True)
class Snippet:
    doc: str
    line: int
    kind: str  # "shell" (a fenced or indented block's command), "inline" (a code span) or "python"
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.text.splitlines()[0][:40]}"


@dataclass(frozen=True)
class Rule:
    """How one kind of command is exercised.

    ``action``: ``run`` (run it, with ``extra`` appended), ``make`` (``make -n TARGET`` must
    succeed), ``make-run`` (run the make target against this interpreter's environment),
    ``pip`` (the package / extras it installs exist), ``synopsis`` (every option it shows is one
    the program accepts), ``open`` (an interactive program: the files and the extra that
    provides it exist), ``options`` (an inline span: its subcommand and options exist).
    """

    action: str
    extra: tuple[str, ...] = ()
    group: str = "pipeline"  # run commands: the work folder they share, run in order in one test
    expect: tuple[str, ...] = field(default=())  # paths (in the work folder) the command must write


# First matching pattern wins; patterns match the command as written (before substitution).
RULES: list[tuple[str, str, Rule]] = [
    ("shell", r"make (demo|test)$", Rule("make")),
    ("shell", r"make notebooks$", Rule("make-run", group="notebooks",
                                       expect=("notebooks_out/confusion_matrices.ipynb",
                                               "notebooks_out/training_curves.ipynb",
                                               "notebooks_out/attention_maps.ipynb"))),
    ("shell", r"pip install ", Rule("pip")),
    ("shell", r"mer-keras synth ", Rule("run", ("--subjects", "2", "--clips", "2", "--frames", "6"))),
    ("shell", r"mer-keras prepare ", Rule("run", ("--workers", "1", "--no-progress"))),
    ("shell", r"mer-keras (--backend \w+ )?loso ",
     Rule("run", ("--quick", "--subjects", QUICK_SUBJECT, "--no-progress"), expect=("{out}/report.json",))),
    ("shell", r"mer-keras fit-final ", Rule("run", ("--quick", "--no-progress"), expect=("{out}/pipeline.json",))),
    ("shell", r"mer-keras predict ", Rule("run", ("--no-progress",))),
    ("shell", r"mer-keras export ", Rule("run", ("--check", "2"), expect=("{out}", "{out}.json"))),
    ("shell", r"mer-keras bench train ", Rule("run", group="bench")),  # already 1 fold x 3 epochs
    ("shell", r"mer-keras bench e2e$", Rule("run", ("--repeats", "1"), group="bench")),
    # 00e's --quick fixes 3 epochs x 3 folds per loop; the vectorised loop (a GPU feature, slow on a CPU) is left out
    ("shell", r"python experiments/00e_gpu_training\.py ",
     Rule("run", ("--recipes", "ststnet", "--loops", "serial", "reference", "--out", "runs/gpu_training"),
          group="bench", expect=("runs/gpu_training/side_by_side.csv",))),
    ("shell", r"python experiments/\w+\.py .*\[", Rule("synopsis")),
    ("shell", r"python experiments/04_off_tanet_table2\.py --quick ",
     Rule("run", ("--no-progress",), group="notebooks", expect=("{out}/results.csv", "{out}/runs.json"))),
    ("shell", r"python experiments/07_off_tanet_table5_attention\.py --quick ",
     Rule("run", ("--no-progress",), group="notebooks", expect=("{out}/fig5_maps.npz",))),
    ("shell", r"(MER_KERAS_RESULTS=\S+ )?jupyter lab ", Rule("open")),
    ("shell", r"(MER_KERAS_RESULTS=\S+ )?python -c ", Rule("run", group="notebooks",
                                                         expect=("confusion_matrices.out.ipynb",))),
    ("inline", r"mer-keras ", Rule("options")),
    ("inline", r"pip install ", Rule("pip")),
    ("inline", r"make \w+$", Rule("make")),
    ("python", r"prepare\(manifest", Rule("run")),
    ("python", r"run_loso\(", Rule("run")),
    ("python", r"load_pipeline\(", Rule("run")),
    ("python", r"models\.get\(", Rule("run", group="bench")),
]

# Paths a README names that no README command writes, as whole tokens (shell) or whole string literals (Python).
PATHS = {
    "/data/CASME2": "data/casme2",
    "/data/SAMM": "data/samm",
    "/data/SMIC": "data/smic",
    "CACHE": "cache/megc2019_112",  # the fit-final placeholder: the cache the README's composite command writes
}
# Inputs the pipeline's work folder holds before its first command (written by `pipeline_folder`).
INPUTS = ("data/casme2", "data/samm", "data/smic", "cache/megc2019_28", "clip.avi", "frames_folder/", "onset.png",
          "apex.png")

# Python snippets: keyword arguments added to (or replacing) those of these calls.
SNIPPET_CALLS = {
    "prepare": lambda kw: {"workers": 1, "progress": False},
    # the same settings as the README's CLI run into the same folder: it resumes (a different config would fail)
    "run_loso": lambda kw: {"recipe": f"{kw['recipe']}-quick", "subjects": [QUICK_SUBJECT], "progress": False},
}

# Commands known to fail because of the code: (the command as written) -> why. Strict: a fix flips the test.
XFAIL: dict[str, str] = {}

# How many of each the READMEs hold; update when a README gains or loses one (after giving it a rule).
EXPECTED_COUNTS = {
    "README.md": {"shell": 21, "inline": 27, "python": 4},
    "experiments/README.md": {"shell": 1, "inline": 0, "python": 0},
    "notebooks/README.md": {"shell": 3, "inline": 5, "python": 0},
}

# ----------------------------------------------------------------------------- extraction


def _quoted(text: str) -> bool:
    """Whether ``text`` ends inside a quoted string (a command continued on the next line)."""
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def _logical_lines(lines: list[str], console: bool):
    """(offset, text) of each command: ``\\``-continued lines joined, a quoted string kept over its lines
    (``python -c "..."``), ``$`` prompts dropped."""
    pending, start = "", 0
    for i, line in enumerate(lines):
        text = line.strip() if not pending or not _quoted(pending) else line
        if not pending:
            start = i
            if console:
                if not text.startswith("$ "):
                    continue  # program output
                text = text[2:]
        if text.endswith("\\") and not _quoted(pending + text[:-1]):
            pending += text[:-1] + " "
            continue
        if _quoted(pending + text):
            pending += text + "\n"
            continue
        yield start, pending + text
        pending = ""
    assert not pending, f"a command ends with a line continuation: {pending!r}"


def _commands(doc: str, first_line: int, lines: list[str], console: bool = False) -> list[Snippet]:
    out = []
    for offset, text in _logical_lines(lines, console):
        words = shlex.split(text, comments=True)
        if words:
            out.append(Snippet(doc, first_line + offset, "shell", shlex.join(words)))
    return out


def _is_command(line: str) -> bool:
    """Whether ``line`` starts a command: a known program, after any ``NAME=value`` assignments."""
    match = re.match(r"^\s*(?:\$ )?(?:[A-Z_][A-Z0-9_]*=\S+\s+)*([\w.-]+)(?:\s|$)", line)
    return bool(match) and match.group(1) in PROGRAMS


def extract(doc: str) -> list[Snippet]:
    """Every command and Python snippet of ``doc`` (a path relative to the repository root)."""
    text = (ROOT / doc).read_text()
    lines = text.splitlines()
    found: list[Snippet] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```\s*([\w-]*)", lines[i])
        if fence:
            lang, j = fence.group(1), i + 1
            while not lines[j].startswith("```"):
                j += 1
            body = lines[i + 1: j]
            if lang == "python":
                found.append(Snippet(doc, i + 2, "python", "\n".join(body)))
            elif lang in SHELL_LANGS:
                found += _commands(doc, i + 2, body, console=lang == "console")
            elif any(_is_command(b) for b in body):
                raise AssertionError(f"{doc}:{i + 1}: a ```{lang} block holds commands: mark it ```bash")
            i = j + 1
            continue
        if lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):  # an indented code block
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = [b[4:] for b in lines[i:j]]
            if _is_command(body[0]):  # a line that starts no command continues the one above (a usage synopsis)
                joined: list[str] = []
                for b in body:
                    if joined and b.strip() and not _is_command(b) and not _quoted("\n".join(joined)):
                        joined[-1] += " \\"
                    joined.append(b)
                found += _commands(doc, i + 1, joined)
            i = j
            continue
        i += 1
    for match in INLINE.finditer(text):
        found.append(Snippet(doc, text.count("\n", 0, match.start()) + 1, "inline", " ".join(match.group(1).split())))
    return found


SNIPPETS = [s for doc in DOCS for s in extract(doc)]


def rule_of(snippet: Snippet) -> tuple[int, Rule] | None:
    for index, (kind, pattern, rule) in enumerate(RULES):
        if kind == snippet.kind and re.search(pattern if kind == "python" else "^" + pattern, snippet.text):
            return index, rule
    return None


# ----------------------------------------------------------------------------- the work folder


def _env(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **extra}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mer_keras.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def pipeline_folder(work: Path) -> Path:
    """``work``, ready for the pipeline commands: it holds ``INPUTS``, a synthetic MEGC2019 composite written by
    ``mer-keras synth`` (2 subjects x 2 clips per dataset), its 28 px STSTNet cache, and a clip as a video, a
    folder of frames and an onset / apex pair."""
    import cv2

    _cli("synth", "megc2019", "--out", "data", "--subjects", "2", "--clips", "2", "--frames", "6", cwd=work)
    _cli("prepare", "--composite", "megc2019", "--data-dir", "data", "--preset", "ststnet", "--workers", "1",
         "--no-progress", "--out", "cache/megc2019_28", cwd=work)
    clip = sorted((work / "data/casme2/Cropped/sub01").iterdir())[0]  # the ststnet bundle reads face crops
    frames = sorted(clip.glob("*.jpg"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    (work / "frames_folder").mkdir()
    images = [cv2.imread(str(p)) for p in frames]
    height, width = images[0].shape[:2]
    video = cv2.VideoWriter(str(work / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    for k, image in enumerate(images):
        cv2.imwrite(str(work / "frames_folder" / f"img{k}.jpg"), image)
        video.write(image)
    video.release()
    cv2.imwrite(str(work / "onset.png"), images[0])
    cv2.imwrite(str(work / "apex.png"), images[len(images) // 2])
    for path in INPUTS:
        assert (work / path).exists(), path
    return work


# ----------------------------------------------------------------------------- running one snippet


def _substitute(word: str) -> str:
    if word in PATHS:
        return PATHS[word]
    name, sep, value = word.partition("=")
    if sep and value in PATHS:
        return f"{name}={PATHS[value]}"
    return word


def _argv(words: list[str]) -> list[str]:
    """The command's program as this interpreter runs it; the repository's scripts and notebooks by full path."""
    words = [str(ROOT / w) if re.match(r"^(experiments|notebooks)/", w) else w for w in words]
    if words[0] == "mer-keras":
        return [sys.executable, "-m", "mer_keras.cli", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return words


def _split(command: str) -> tuple[dict, list[str]]:
    words = shlex.split(command)
    env = {}
    while re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def _option_value(words: list[str], option: str) -> str | None:
    return words[words.index(option) + 1] if option in words else None


def run_shell(snippet: Snippet, rule: Rule, cwd: Path) -> subprocess.CompletedProcess:
    env, words = _split(snippet.text)
    words = [_substitute(w) for w in words] + list(rule.extra)
    proc = subprocess.run(_argv(words), cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT)
    where = f"{snippet.doc}:{snippet.line}: {snippet.text}\nran: {shlex.join(words)}\nexit {proc.returncode}"
    assert proc.returncode == 0, f"{where}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = _option_value(words, "--out")
    for path in rule.expect:
        assert (cwd / path.format(out=out)).exists(), f"{where}\n{path.format(out=out)} was not written"
        if path.endswith(".ipynb"):
            _check_executed(cwd / path)
    return proc


class _AddKeywords(ast.NodeTransformer):
    def __init__(self):
        self.used = set()

    def visit_Constant(self, node):
        if isinstance(node.value, str) and node.value in PATHS:
            return ast.copy_location(ast.Constant(PATHS[node.value]), node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        if name in SNIPPET_CALLS:
            self.used.add(name)
            given = {k.arg: ast.literal_eval(k.value) for k in node.keywords if isinstance(k.value, ast.Constant)}
            new = SNIPPET_CALLS[name](given)
            node.keywords = [k for k in node.keywords if k.arg not in new]
            node.keywords += [ast.keyword(arg=k, value=ast.parse(repr(v), mode="eval").body) for k, v in new.items()]
        return node


def python_source(snippet: Snippet) -> tuple[str, set]:
    transformer = _AddKeywords()
    tree = ast.fix_missing_locations(transformer.visit(ast.parse(snippet.text)))
    return ast.unparse(tree), transformer.used


def run_python(snippet: Snippet, cwd: Path) -> subprocess.CompletedProcess:
    source, _ = python_source(snippet)
    proc = subprocess.run([sys.executable, "-c", source], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, (f"{snippet.doc}:{snippet.line}: exit {proc.returncode}\n{source}\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _extras() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return dict(cfg["options.extras_require"]), cfg["metadata"]["name"]


def check_pip(snippet: Snippet) -> None:
    extras, name = _extras()
    _, words = _split(snippet.text)
    targets = [w for w in words[2:] if not w.startswith("-")]
    assert targets, snippet.text
    for target in targets:
        base, _, rest = target.partition("[")
        assert base in (".", name), f"{snippet.text}: installs {base!r}, not this package ({name})"
        for extra in filter(None, rest.rstrip("]").split(",")):
            assert extra in extras, f"{snippet.text}: setup.cfg has no extra {extra!r} (it has {sorted(extras)})"


def check_make(snippet: Snippet) -> None:
    _, words = _split(snippet.text)
    proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip(), f"{snippet.text}: {proc.stderr}"


def run_make(snippet: Snippet, rule: Rule, cwd: Path) -> None:
    """The make target against this interpreter's environment (its install step taken as done), its outputs
    (``EXPERIMENTS_OUT``, ``NOTEBOOKS_OUT``) under ``cwd``, where the commands before it wrote theirs."""
    _, words = _split(snippet.text)
    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    out = cwd / "notebooks_out"
    variables = [f"VENV={venv}", f"EXPERIMENTS_OUT={cwd / 'experiments_out'}", f"NOTEBOOKS_OUT={out}"]
    proc = subprocess.run(["make", "-o", str(stamp), *words[1:], *variables], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{snippet.text}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for path in rule.expect:
        assert (cwd / path).is_file(), f"{snippet.text}: {path} was not written"
        _check_executed(cwd / path)


def _check_executed(path: Path) -> None:
    """An executed notebook: every code cell ran, none raised, and it drew at least one figure."""
    import nbformat

    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert cells and all(c.execution_count for c in cells), f"{path.name}: not every cell ran"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.outputs), f"{path.name}: no figure"


def _accepted_options(program: list[str]) -> str:
    proc = subprocess.run(_argv([*program, "--help"]), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check_synopsis(snippet: Snippet) -> None:
    """Every ``--option`` a usage line shows is one the script's ``--help`` lists."""
    _, words = _split(snippet.text)
    usage = _accepted_options(words[:2])
    options = set(re.findall(r"(?<![\w-])(--[\w-]+)", snippet.text))
    assert options, snippet.text
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", usage))
    assert not missing, f"{snippet.doc}:{snippet.line}: the script does not accept {missing}"


def check_options(snippet: Snippet) -> None:
    """An inline ``mer-keras ...`` span: its subcommand (and bench kind) exist and every option it names is one
    that subcommand (or the program) accepts."""
    from mer_keras.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    words = [w for w in shlex.split(snippet.text)[1:] if w != "..." and not w.startswith("[")]
    top, i = set(parser._option_string_actions), 0
    while i < len(words) and words[i].startswith("-"):
        assert words[i] in top, f"{snippet.text}: mer-keras has no option {words[i]}"
        i += 2 if parser._option_string_actions[words[i]].nargs != 0 else 1
    if i == len(words):
        return
    command = words[i]
    assert command in subparsers.choices, f"{snippet.text}: no subcommand {command!r}"
    sub = subparsers.choices[command]
    if command == "bench":
        kinds = next(a for a in sub._actions if a.dest == "what").choices
        assert words[i + 1] in kinds, f"{snippet.text}: bench has no {words[i + 1]!r}"
    for word in words[i + 1:]:
        if word.startswith("--"):
            assert word in sub._option_string_actions, f"{snippet.text}: `mer-keras {command}` has no option {word}"


def check_open(snippet: Snippet) -> None:
    """``jupyter lab NOTEBOOK``: the notebook exists, the extra that installs JupyterLab too."""
    env, words = _split(snippet.text)
    extras, _ = _extras()
    assert set(env) <= {"MER_KERAS_RESULTS"}, env
    assert "jupyterlab" in extras.get("notebooks", ""), "setup.cfg: the notebooks extra does not install jupyterlab"
    for word in words[2:]:
        assert (ROOT / word).exists(), f"{snippet.text}: {word} does not exist"


# ----------------------------------------------------------------------------- the tests

GROUPS = ("pipeline", "bench", "notebooks")


def _action(snippet: Snippet) -> str:
    found = rule_of(snippet)
    return found[1].action if found else "unknown"


def test_every_command_has_a_rule():
    unknown = [f"{s.doc}:{s.line}: {s.kind}: {s.text[:100]}" for s in SNIPPETS if rule_of(s) is None]
    assert not unknown, "no rule in tests/test_readme.py RULES for:\n" + "\n".join(unknown)


def test_every_rule_and_substitution_is_used():
    rules = {rule_of(s)[0] for s in SNIPPETS if rule_of(s)}
    assert not set(range(len(RULES))) - rules, [RULES[i][:2] for i in sorted(set(range(len(RULES))) - rules)]
    words = " ".join(s.text for s in SNIPPETS)
    unused = [p for p in PATHS if not re.search(rf"(?<![\w/]){re.escape(p)}(?![\w/])", words)]
    assert not unused, f"PATHS entries no README names: {unused}"
    stale = [c for c in XFAIL if c not in {s.text for s in SNIPPETS}]
    assert not stale, f"XFAIL entries no README holds: {stale}"
    calls = set().union(*(python_source(s)[1] for s in SNIPPETS if s.kind == "python"))
    assert calls == set(SNIPPET_CALLS), sorted(set(SNIPPET_CALLS) - calls)
    run_groups = {rule_of(s)[1].group for s in SNIPPETS if _action(s) in ("run", "make-run")}
    assert run_groups == set(GROUPS), run_groups


def test_counts():
    kinds = ("shell", "inline", "python")
    counts = {doc: {kind: sum(s.doc == doc and s.kind == kind for s in SNIPPETS) for kind in kinds} for doc in DOCS}
    actions = {}
    for s in SNIPPETS:
        actions[_action(s)] = actions.get(_action(s), 0) + 1
    print(f"README commands and snippets: {counts}; by action: {actions}")
    assert counts == EXPECTED_COUNTS, f"the READMEs changed: {counts} (give new ones a rule, update EXPECTED_COUNTS)"


@pytest.mark.parametrize("snippet", [pytest.param(s, id=s.id) for s in SNIPPETS
                                     if _action(s) not in ("run", "make-run")])
def test_readme_check(snippet):
    """A command that is checked, not run: a make target, an install line, a synopsis, an inline span."""
    assert snippet.text not in XFAIL, "XFAIL lists commands that run"
    {"make": check_make, "pip": check_pip, "synopsis": check_synopsis, "options": check_options,
     "open": check_open}[_action(snippet)](snippet)


@pytest.mark.parametrize("group", GROUPS)
def test_readme_runs(group, tmp_path):
    """The group's commands and snippets, in the READMEs' order, in one work folder: one test per group, so
    that a later command finds what an earlier one wrote whichever worker runs it. A command in ``XFAIL`` must
    fail (strict: when it passes, remove it from ``XFAIL``); any other failure fails the test, after the rest
    of the group has run."""
    import time

    cwd = pipeline_folder(tmp_path) if group == "pipeline" else tmp_path
    if group == "notebooks":  # the notebooks as a snippet names them, relative to the repository root
        (cwd / "notebooks").symlink_to(ROOT / "notebooks", target_is_directory=True)
    snippets = [s for s in SNIPPETS if _action(s) in ("run", "make-run") and rule_of(s)[1].group == group]
    assert snippets
    failures, expected, lines = [], [], []
    for snippet in snippets:
        rule = rule_of(snippet)[1]
        start = time.perf_counter()
        try:
            if rule.action == "make-run":
                run_make(snippet, rule, cwd)
            elif snippet.kind == "python":
                run_python(snippet, cwd)
            else:
                run_shell(snippet, rule, cwd)
        except AssertionError as exc:
            (expected if snippet.text in XFAIL else failures).append(f"{snippet.id}\n{exc}")
            outcome = "xfail" if snippet.text in XFAIL else "FAILED"
        else:
            outcome = "XPASS" if snippet.text in XFAIL else "ok"
            if snippet.text in XFAIL:
                failures.append(f"{snippet.id}: passes now; remove it from XFAIL ({XFAIL[snippet.text]})")
        lines.append(f"  {outcome:6} {time.perf_counter() - start:6.1f} s  {snippet.doc}:{snippet.line}  "
                     f"{snippet.text.splitlines()[0][:80]}")
    print(f"{group}: ran {len(snippets)} command(s) and snippet(s)\n" + "\n".join(lines))
    assert not failures, "\n\n".join(failures)
